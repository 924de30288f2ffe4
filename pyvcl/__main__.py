"""``python -m pyvcl`` is the ``pyvcl`` command."""

import sys

from .cli import main

sys.exit(main())
