"""Transparent huge pages for the model server's memory, through glibc's malloc tunable.

The towers stream their weights once a query (ViT-B/32 int8 text: 38 MB); in 4 KB pages that
is a TLB miss a page, which costs most under a hypervisor. glibc reads its tunables only when a
process starts, so the server runs itself again with the tunable set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from fashion_search.settings import Settings

#: Makes malloc ask for transparent huge pages (``madvise``) for its heap and mmap'd chunks,
#: where ONNX Runtime keeps the towers' weights.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def with_huge_pages(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with the huge-page tunable added to ``GLIBC_TUNABLES``; None if it is set."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if HUGE_PAGES_TUNABLE in tunables.split(":"):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES_TUNABLE)))}


def exec_with_huge_pages(settings: Settings) -> None:
    """Run this process again (same pid, same arguments) with the tunable, unless it is set
    already, not wanted (``FS_MODEL_HUGE_PAGES=false``) or not Linux."""
    environ = with_huge_pages(os.environ)
    if settings.model_server.huge_pages and sys.platform == "linux" and environ is not None:
        os.execve(sys.executable, sys.orig_argv, environ)
