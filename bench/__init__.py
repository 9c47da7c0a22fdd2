"""Relay's benchmark suite: SSE delivery, fan-out, idle streams, callback ingest and replay,
measured against Relay, a tutorial-style Python peer (Starlette + sse-starlette + redis-py
pub/sub, bench/peer/) and nginx + nchan (Redis storage) on the same machine.

Run `python -m bench all --quick` (about five minutes) or `python -m bench all` (the full
sizes); see bench/README.md.
"""
