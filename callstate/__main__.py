"""``python -m callstate``: the same as the ``callstate`` console script."""

import sys

from callstate.cli import main

sys.exit(main())
