"""``python -m devstack demo|serve``."""

from devstack.cli import main

raise SystemExit(main())
