"""`/files/`: the HTTP route that serves the local-folder storage (results and uploads;
never task metadata). Lives above the seam: the backend only stores and reads files."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route

from relay.backends.factory import local_folders
from relay.backends.files import SERVE_HEADERS
from relay.backends.objects import DOWNLOAD_NAME, SERVED_PREFIXES, check_key
from relay.errors import BadRequest, NotFound
from relay.media import BY_EXT
from relay.settings import Settings


def files_routes(roots: list[Path]) -> list[Route]:
    """GET/HEAD `/{key}` from the first folder in `roots` that has it."""
    resolved = [r.resolve() for r in roots]

    async def serve(request: Request) -> Response:
        key: str = request.path_params["key"]
        ext = key.rpartition(".")[2].lower()
        media_type = BY_EXT.get(ext)
        if media_type is None or ext == "json" or not key.startswith(SERVED_PREFIXES):
            raise NotFound("no such file")
        try:
            check_key(key)
        except BadRequest:
            raise NotFound("no such file") from None
        for root in resolved:
            path = (root / key).resolve()
            if path.is_relative_to(root) and path.is_file():
                return FileResponse(path, media_type=media_type, headers=_headers(request))
        raise NotFound("no such file")

    return [Route("/{key:path}", serve, methods=["GET", "HEAD"])]


def _headers(request: Request) -> dict[str, str]:
    """`?download=name` (from /api/download-url) asks for a "save as" of that name."""
    name = request.query_params.get("download")
    if name is None:
        return SERVE_HEADERS
    if not DOWNLOAD_NAME.fullmatch(name):
        raise BadRequest("download must be a plain file name (letters, digits, '.', '_', '-')")
    return {**SERVE_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}


def files_mount(settings: Settings) -> Mount | None:
    """`/files/` serving every local-folder storage that is configured (primary or
    fallback), or None when no storage is a local folder."""
    roots = local_folders(settings)
    return Mount("/files", routes=files_routes(roots), name="files") if roots else None
