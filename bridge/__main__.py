"""``python -m bridge``: the same command line as ``chatbase-bridge``."""

from bridge.cli import main

raise SystemExit(main())
