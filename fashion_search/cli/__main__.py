"""``python -m fashion_search.cli``: the ``fashion-search`` command."""

import sys

from fashion_search.cli import main

sys.exit(main())
