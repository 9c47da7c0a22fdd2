"""Shares: a finished result made public on purpose, its page (with the preview tags chat
apps read), and the public gallery.

A share always points at our stored copy of a completed result, never at a URL the
caller chose: `generatedUrl` must be one of the task's own result URLs, and the task must
be one the caller may see. The same share again within 5 s (a double click) returns the
first one.
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from relay import idempotency, keys
from relay.backends.base import Share
from relay.errors import BadRequest, Conflict, NotFound
from relay.http import JSONResponse
from relay.legacy.access import owned_task, stored_key
from relay.models import Mode, Status, rfc3339
from relay.parsing import ascii_int, optional_text
from relay.services import Services
from relay.tasks import services

DOUBLE_CLICK = 5.0
MAX_PROMPT = 2000
MAX_STYLE = 100
SHARE_ID = re.compile(r"^[A-Za-z0-9_-]{8,32}$")
CURSOR = re.compile(r"^[0-9]{15}:[A-Za-z0-9_-]{8,32}$")
_GENERATED = re.compile(r"/generated/([A-Za-z0-9_-]{1,128})/(\d{1,3})\.[a-z0-9]{2,5}$")


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0]


def _target(body: dict[str, Any]) -> tuple[str, int | None]:
    """The task and result index a share request names."""
    task_id, generated = body.get("taskId"), body.get("generatedUrl")
    if (task_id is None) == (generated is None):
        raise BadRequest("give either taskId or generatedUrl")
    if task_id is not None:
        if not isinstance(task_id, str):
            raise BadRequest("taskId must be a string", code="invalid_task_id")
        index = body.get("index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
            raise BadRequest("index must be a whole number from 0")
        return task_id, index
    if not isinstance(generated, str) or len(generated) > 2048:
        raise BadRequest("generatedUrl must be one of this service's result URLs", code="not_our_result")
    match = _GENERATED.search(_strip_query(generated))
    if match is None:
        raise BadRequest("generatedUrl is not one of this service's result URLs", code="not_our_result")
    return match.group(1), int(match.group(2))


async def create_share(svc: Services, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    task_id, index = _target(body)
    task = await owned_task(svc, request, task_id)
    if task.status is not Status.COMPLETED:
        raise Conflict(f"task {task.task_id!r} is {task.status.value}; only a completed result can be shared")
    index = index or 0
    if "generatedUrl" in body and (
        index >= len(task.result_urls)
        or _strip_query(task.result_urls[index]) != _strip_query(str(body["generatedUrl"]))
    ):
        raise BadRequest("generatedUrl is not one of this task's result URLs", code="not_our_result")
    if index >= len(task.result_urls):
        raise NotFound(f"task {task.task_id!r} has {len(task.result_urls)} result(s); index {index} is not one")
    if stored_key(task, index) is None:
        raise Conflict("this result is not in our storage (mirroring is off or failed), so it cannot be shared",
                       code="not_mirrored")
    prompt = optional_text(body, "prompt", MAX_PROMPT) or task.prompt
    style = optional_text(body, "style", MAX_STYLE)
    who = hashlib.sha256(f"{task.owner}:{request.cookies.get('relay_browser', '')}".encode()).hexdigest()
    claim = f"{keys.PREFIX}:sharing:{who}:{task.task_id}:{index}"

    async def begin() -> tuple[str, idempotency.Step]:
        share = Share(
            share_id=secrets.token_urlsafe(9), task_id=task.task_id, index=index,
            url=task.result_urls[index], kind=task.kind, mode=task.mode.value,
            prompt=prompt, style=style, created=time.time(),
        )

        async def store() -> None:
            await svc.shares.add(share)

        return share.share_id, store

    share_id, _ = await idempotency.once(svc.coordination, claim, DOUBLE_CLICK, begin, svc.settler)
    return {"success": True, "shareId": share_id, "shareUrl": f"{svc.settings.public_url}/share/{share_id}"}


def _public(svc: Services, share: Share) -> dict[str, Any]:
    return {
        "shareId": share.share_id,
        "shareUrl": f"{svc.settings.public_url}/share/{share.share_id}",
        "url": share.url,
        "kind": share.kind,
        "mode": share.mode,
        "prompt": share.prompt,
        "style": share.style,
        "createdAt": rfc3339(datetime.fromtimestamp(share.created, UTC)),
    }


async def list_shares(request: Request) -> JSONResponse:
    svc = services(request)
    q = request.query_params
    mode = q.get("mode") or None
    if mode is not None and mode not in Mode.__members__.values():
        raise BadRequest(f"mode must be one of: {', '.join(m.value for m in Mode)}")
    limit = ascii_int(q.get("limit", "20"), max_digits=3)
    if limit is None or not 1 <= limit <= 100:
        raise BadRequest("limit must be a whole number from 1 to 100")
    cursor = q.get("cursor") or None
    if cursor is not None and not CURSOR.fullmatch(cursor):
        raise BadRequest("cursor is not one this service returned")
    items, next_cursor = await svc.shares.page(mode=mode, limit=limit, cursor=cursor)
    return JSONResponse({"success": True, "items": [_public(svc, s) for s in items], "nextCursor": next_cursor})


_MEDIA = {
    "image": '<img src="{url}" alt="{alt}">',
    "video": '<video src="{url}" controls playsinline></video>',
    "audio": '<audio src="{url}" controls></audio>',
}


async def share_page(request: Request) -> HTMLResponse:
    svc = services(request)
    share_id = request.path_params["share_id"]
    share = await svc.shares.get(share_id) if SHARE_ID.fullmatch(share_id) else None
    if share is None:
        raise NotFound("no such share (it may have expired)")
    return HTMLResponse(render_page(svc, share), headers={"content-security-policy": CSP, "cache-control": "public, max-age=300"})


CSP = "default-src 'none'; img-src * data:; media-src *; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def render_page(svc: Services, share: Share) -> str:
    e = html.escape
    title = share.prompt if len(share.prompt) <= 70 else share.prompt[:67] + "..."
    page_url = f"{svc.settings.public_url}/share/{share.share_id}"
    created = time.strftime("%d %B %Y", time.gmtime(share.created))
    media_tag = {"image": "og:image", "video": "og:video", "audio": "og:audio"}[share.kind]
    card = "summary_large_image" if share.kind == "image" else "player" if share.kind == "video" else "summary"
    tags = [
        ("property", "og:type", "video.other" if share.kind == "video" else "website"),
        ("property", "og:title", title),
        ("property", "og:description", share.prompt[:200]),
        ("property", "og:url", page_url),
        ("property", media_tag, share.url),
        ("name", "twitter:card", card),
        ("name", "twitter:title", title),
        ("name", "twitter:description", share.prompt[:200]),
    ]
    if share.kind == "image":
        tags.append(("name", "twitter:image", share.url))
    meta = "\n".join(f'<meta {kind}="{e(name)}" content="{e(value)}">' for kind, name, value in tags)
    style = f"<p class=style>Style: {e(share.style)}</p>" if share.style else ""
    media = _MEDIA[share.kind].format(url=e(share.url), alt=e(share.prompt[:200]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
{meta}
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #111; color: #eee; }}
main {{ max-width: 960px; margin: 0 auto; padding: 1.5rem; }}
img, video {{ max-width: 100%; border-radius: 8px; display: block; }}
audio {{ width: 100%; }}
.meta {{ color: #bbb; }}
</style></head>
<body><main>
{media}
<h1>{e(share.prompt)}</h1>
{style}
<p class="meta"><time datetime="{time.strftime('%Y-%m-%d', time.gmtime(share.created))}">{created}</time></p>
</main></body></html>
"""
