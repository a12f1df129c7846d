"""Allow ``python -m susee``."""

from susee.cli import main

raise SystemExit(main())
