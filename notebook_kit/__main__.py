"""`python -m notebook_kit ...`: see `notebook_kit.cli`."""

from .cli import main

raise SystemExit(main())
