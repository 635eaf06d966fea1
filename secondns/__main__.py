"""``python -m secondns`` is the same as the ``secondns`` command."""

from secondns.cli import main

raise SystemExit(main())
