"""``python -m model_server``: serve the registry's champion CLIP over gRPC until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys

from fashion_search.settings import Settings, get_settings

#: glibc's tunable that makes malloc ask for transparent huge pages (``madvise``) for its heap
#: and its mmap'd chunks, where ONNX Runtime keeps the towers' weights.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def exec_with_huge_pages(settings: Settings) -> None:
    """Run this process again (same pid) with the huge-page tunable, which glibc reads only at
    start, unless it is set or not wanted."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not settings.model_huge_pages or sys.platform != "linux" or HUGE_PAGES_TUNABLE in tunables:
        return
    env = {**os.environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES_TUNABLE)))}
    os.execve(sys.executable, sys.orig_argv, env)


if __name__ == "__main__":
    settings = get_settings()
    exec_with_huge_pages(settings)
    from model_server.service import serve  # after the exec: its imports take seconds

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(settings)
    logging.getLogger("model_server").info("stopped")
