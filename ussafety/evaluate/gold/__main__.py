"""``python -m ussafety.evaluate.gold``: see :mod:`ussafety.evaluate.gold.cli`."""

from ussafety.evaluate.gold.cli import main

raise SystemExit(main())
