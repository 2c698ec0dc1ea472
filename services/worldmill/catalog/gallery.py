"""The web gallery's page and static files: no data in them, so no token (the page asks for it)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).parent / "static"
FILES = {"gallery.js": "text/javascript", "gallery.css": "text/css"}

gallery_router = APIRouter(include_in_schema=False)


@gallery_router.get("/")
async def root() -> RedirectResponse:
    """The gallery is the catalog's home page."""
    return RedirectResponse("/gallery")


@gallery_router.get("/gallery")
async def page() -> FileResponse:
    """The gallery page."""
    return FileResponse(STATIC / "gallery.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@gallery_router.get("/gallery/static/{name}")
async def static(name: str) -> FileResponse:
    """The gallery's script and style sheet (only these two names)."""
    if name not in FILES:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=FILES[name], headers={"Cache-Control": "no-cache"})
