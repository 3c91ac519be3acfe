"""``python -m mappedpages``: the command line."""

from .cli import main

raise SystemExit(main())
