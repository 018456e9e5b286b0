"""``python -m forewarn``: the same as the ``forewarn`` command."""

import sys

from forewarn.cli import main

sys.exit(main())
