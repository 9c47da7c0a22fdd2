"""Shares: a finished result made public on purpose (`POST /api/share`), and the public
gallery of them. In-process (`memory://`) and Redis (`redis://`) implementations of the
`Shares` seam (relay/backends/base.py); one JSON record per share, and an index per mode
ordered by creation, so the gallery pages newest first."""

from __future__ import annotations

import time

from relay import keys
from relay.backends.base import Share
from relay.backends.redis import Client, call


def _before(share: Share, cursor: str | None) -> bool:
    return cursor is None or share.cursor < cursor


class MemoryShares:
    def __init__(self) -> None:
        self._shares: dict[str, Share] = {}

    async def add(self, share: Share) -> None:
        self._shares[share.share_id] = share

    async def get(self, share_id: str) -> Share | None:
        return self._shares.get(share_id)

    async def page(self, *, mode: str | None, limit: int, cursor: str | None) -> tuple[list[Share], str | None]:
        ordered = sorted(self._shares.values(), key=lambda s: s.cursor, reverse=True)
        items = [s for s in ordered if (mode is None or s.mode == mode) and _before(s, cursor)]
        page = items[:limit]
        return page, (page[-1].cursor if len(items) > limit and page else None)


class RedisShares:
    def __init__(self, client: Client, *, ttl: float, keyspace: keys.Keyspace = keys.SINGLE):
        self._r = client
        self._k = keyspace
        self._ttl_ms = int(ttl * 1000)

    async def add(self, share: Share) -> None:
        score = int(share.created * 1000)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k.share(share.share_id), share.to_json(), px=self._ttl_ms)
            for index in (self._k.shares_index(None), self._k.shares_index(share.mode)):
                pipe.zadd(index, {share.share_id: score})
                # Old entries leave the indexes with their records.
                pipe.zremrangebyscore(index, "-inf", int(time.time() * 1000) - self._ttl_ms)
            await call(pipe.execute())

    async def get(self, share_id: str) -> Share | None:
        raw = await call(self._r.get(self._k.share(share_id)))
        return Share.from_json(raw) if raw is not None else None

    async def page(self, *, mode: str | None, limit: int, cursor: str | None) -> tuple[list[Share], str | None]:
        top: str | int = "+inf"
        if cursor:
            score_text = cursor.partition(":")[0]
            top = int(score_text) if score_text.isdigit() else "+inf"
        ids = await call(
            self._r.zrevrangebyscore(self._k.shares_index(mode), top, "-inf", start=0, num=limit + 20)
        )
        if not ids:
            return [], None
        raws = await call(self._r.mget([self._k.share(i.decode()) for i in ids]))
        shares = [Share.from_json(r) for r in raws if r is not None]
        items = [s for s in shares if _before(s, cursor)]
        page = items[:limit]
        return page, (page[-1].cursor if len(items) > limit and page else None)
