"""The seams: task store, hub, object storage. `open_store`/`open_hub` pick the
implementation by URL scheme, so code above the seam never knows which one runs."""
