"""``python -m popcon``: the same as the ``popcon`` command."""

import sys

from .cli import main

sys.exit(main())
