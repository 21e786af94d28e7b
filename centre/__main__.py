"""``python -m centre`` is ``canopy-centre``."""

from centre.cli import main

raise SystemExit(main())
