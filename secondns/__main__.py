"""``python -m secondns`` is the same as the ``secondns`` command."""

from .cli import main

raise SystemExit(main())
