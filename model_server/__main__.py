"""``python -m model_server``: serve the registry's champion CLIP over gRPC until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from fashion_search.settings import get_settings
from model_server.service import serve


async def _main() -> None:
    task = asyncio.create_task(serve(get_settings()))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        logging.getLogger("model_server").info("stopped")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(_main())
