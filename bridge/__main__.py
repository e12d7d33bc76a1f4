"""``python -m bridge``: the same command line as ``chatbase-bridge``."""

from bridge.app.cli import main

raise SystemExit(main())
