"""Where delivery jobs queued by earlier versions look for their function (``controlplane.delivery.deliver``).

rq stores a job's function by its dotted name, and a delivery may wait in Redis for days; the job
now lives in controlplane.messaging.delivery. Kept so that an upgrade loses no queued event.
"""

from controlplane.messaging.delivery import deliver  # noqa: F401 - the name old jobs import
