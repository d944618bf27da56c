"""A per-line send rate limit, so a burst from the integrator does not get the number flagged as spam.

GCRA (the generic cell rate algorithm) in one Lua script: a steady rate with a burst allowance, one
key per line holding one number, exact under concurrency across api processes.
"""

import time

import redis

from controlplane.core.keys import rate_key

# KEYS[1]: the line's key. ARGV: now, seconds per message, burst allowance in seconds.
# Returns "0" when allowed, else the seconds to wait (as a string: Lua numbers come back as integers).
_GCRA = """
local now, interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or ARGV[1]), now)
if now < tat - tolerance then return tostring(tat - tolerance - now) end
local next_tat = tat + interval
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 1000)
return '0'
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, per_minute: float, burst: int):
        self.interval = 60.0 / per_minute
        self.tolerance = self.interval * (max(burst, 1) - 1)
        self._script = client.register_script(_GCRA)

    def acquire(self, line: str) -> float:
        """Take one send for the line: 0 if allowed now, else the seconds to wait before it would be."""
        wait = self._script(keys=[rate_key(line)], args=[f"{time.time():.6f}", self.interval, self.tolerance])
        return float(wait)
