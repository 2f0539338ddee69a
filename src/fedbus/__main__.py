"""``python -m fedbus``: the same as the ``fedbus`` command."""

import sys

from fedbus.cli import main

sys.exit(main())
