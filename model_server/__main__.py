"""``python -m model_server``: serve the registry's champion CLIP over gRPC until SIGTERM, or
train or export a version (:mod:`model_server.commands`)."""

from __future__ import annotations

import sys

from model_server.commands import main

if __name__ == "__main__":
    sys.exit(main())
