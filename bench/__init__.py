"""Relay's benchmark suite: SSE delivery, fan-out, idle streams, callback ingest and replay,
measured against Relay and against nginx + nchan (Redis storage) on the same machine.

Run `python -m bench all --quick` (about three minutes) or `python -m bench all` (the full
sizes); see bench/README.md.
"""
