"""``python -m model_server``: serve the registry's champion CLIP over gRPC until SIGTERM."""

from __future__ import annotations

import logging

from fashion_search.settings import get_settings
from model_server.huge_pages import exec_with_huge_pages

if __name__ == "__main__":
    settings = get_settings()
    exec_with_huge_pages(settings)
    from model_server.service import serve  # after the exec: its imports take seconds

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(settings)
    logging.getLogger("model_server").info("stopped")
