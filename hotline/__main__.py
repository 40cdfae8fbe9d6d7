"""``python -m hotline``: the same as the ``hotline`` command."""

import sys

from ._cli import main

sys.exit(main())
