"""``python -m tools.make_calibration``: regenerate the synthetic calibration and held-out sets."""

from .cli import main

raise SystemExit(main())
