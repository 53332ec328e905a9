"""The pure core: events -> instances, batching, ordering and commit bookkeeping.

Nothing here does I/O; it is tested without sockets.
"""
