"""``python -m vpmu.cli``: the same as the ``vpmu`` command."""

from vpmu.cli import main

raise SystemExit(main())
