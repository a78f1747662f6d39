"""The node's live page: the files of ``daemon/http/page/`` (package data), served as
``GET /`` (``index.html``) and ``GET /ui/<name>``.

The allow-list is the directory as found when the server starts: every regular file below
it whose suffix has a content type here, read into memory once (the page is a few hundred
kilobytes at most). A request names a key of that table or gets 404, so no path in a URL
ever reaches the file system: no traversal, no symlink followed out of the folder, no file
added later served.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("ai_analytics.daemon.http")

PAGE_DIR = Path(__file__).resolve().parent / "page"
INDEX = "index.html"
MAX_FILE_BYTES = 1024 * 1024  # a file larger than this is not part of the page
# By suffix; a file without one (LICENSE, VERSION) is text.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    "": "text/plain; charset=utf-8",
}


class PageFile(NamedTuple):
    content_type: str
    body: bytes


def load_page(directory: Path = PAGE_DIR) -> dict[str, PageFile]:
    """The page's files by their name under ``directory`` ("index.html",
    "vendor/uplot/uPlot.min.css"); empty when the folder is missing (logged)."""
    files: dict[str, PageFile] = {}
    if not directory.is_dir():
        log.warning("the live page is not installed (no folder %s): / and /ui/ answer 404",
                    directory)
        return files
    for folder, subfolders, names in os.walk(directory):  # os.walk follows no symlinked folder
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            path = Path(folder, name)
            content_type = CONTENT_TYPES.get(path.suffix.lower())
            if name.startswith(".") or content_type is None or path.is_symlink():
                continue
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    log.warning("page file %s is larger than %d bytes: not served", path,
                                MAX_FILE_BYTES)
                    continue
                body = path.read_bytes()
            except OSError as exc:
                log.warning("page file %s cannot be read, not served: %s", path, exc)
                continue
            files[path.relative_to(directory).as_posix()] = PageFile(content_type, body)
    return files


__all__ = ["INDEX", "PAGE_DIR", "PageFile", "load_page"]
