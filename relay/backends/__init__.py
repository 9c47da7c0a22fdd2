"""The seams: task store, coordination, hub and object storage, each a Protocol
(base.py, objects.py) with an in-process and a real implementation. `open_backends` and
`open_storage` pick them by URL scheme, so code above the seams never knows which runs."""

from relay.backends.factory import open_backends, open_storage

__all__ = ["open_backends", "open_storage"]
