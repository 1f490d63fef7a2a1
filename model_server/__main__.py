"""``python -m model_server``: serve the registry's champion CLIP over gRPC until SIGTERM."""

from __future__ import annotations

import logging

from fashion_search.settings import get_settings
from model_server.service import serve

if __name__ == "__main__":
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(settings)
    logging.getLogger("model_server").info("stopped")
