"""The bench's third target: an SSE push service written the way the tutorials show it
(Starlette + sse-starlette + redis-py asyncio pub/sub). `app.py` is the service itself;
`run.py` is the bench's launcher around it (GC pause recording, not part of the tutorial)."""
