"""``python -m functions``: every function's routes in one HTTP server (uvicorn) for local use."""

from __future__ import annotations

import uvicorn

from fashion_search.settings import get_settings
from functions.api.app import create_app


def main() -> None:
    """Serve the API on FS_API_HOST:FS_API_PORT until SIGTERM."""
    settings = get_settings()
    uvicorn.run(
        create_app(), host=settings.search.api_host, port=settings.search.api_port, log_level="info"
    )


if __name__ == "__main__":
    main()
