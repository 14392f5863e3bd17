"""How a node's link retries, which the server's patience depends on.

A node cut off (a server restart) retries its connection with backoff up to a
ceiling drawn per node from ``RECONNECT_MAX_MS``; the server, after a restart,
gives a node's reloaded work that long beyond its node expiry to come back, so a
node still between two retries is not taken for gone.
"""

RECONNECT_MS = (100, 500)         # a node's first retry after a cut: base interval range
RECONNECT_MAX_MS = (4000, 6000)   # the backoff's ceiling, different on every node
RECONNECT_GRACE = RECONNECT_MAX_MS[1] / 1000 + 1.0  # seconds: the longest wait + a handshake
