"""``python -m hotline``: the same as the ``hotline`` command."""

import sys

from .cli import main

sys.exit(main())
