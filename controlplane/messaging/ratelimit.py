"""A per-line send rate limit, so a burst from the integrator does not get the number flagged as spam.

GCRA (the generic cell rate algorithm) in one Lua script: a steady rate with a burst allowance, one
key per line holding one number, exact under concurrency across api processes. A request costs
what its kind shows on WhatsApp's side (outbound.COSTS): a message 1, a typing indicator a tenth.
"""

import time

import redis

from controlplane.core.keys import rate_key

# KEYS[1]: the line's key. ARGV: now, seconds per message, burst allowance in seconds, the cost (in
# messages). Returns "0" when allowed, else the seconds to wait (a string: Lua numbers come back as
# integers). With a cost of 1 it is plain GCRA; a cost c takes c messages' worth of the allowance.
_GCRA = """
local now, interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local increment = interval * tonumber(ARGV[4])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or ARGV[1]), now)
local allowed_at = tat + increment - interval - tolerance
if now < allowed_at then return tostring(allowed_at - now) end
local next_tat = tat + increment
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 1000)
return '0'
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, per_minute: float, burst: int):
        self.interval = 60.0 / per_minute
        self.tolerance = self.interval * (max(burst, 1) - 1)
        self._script = client.register_script(_GCRA)

    def acquire(self, line: str, cost: float = 1.0) -> float:
        """Take ``cost`` messages' worth for the line: 0 if allowed now, else the seconds to wait."""
        wait = self._script(keys=[rate_key(line)], args=[f"{time.time():.6f}", self.interval, self.tolerance, cost])
        return float(wait)
