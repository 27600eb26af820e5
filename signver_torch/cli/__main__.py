"""``python -m signver_torch.cli`` is the ``signver`` command."""

import sys

from signver_torch.cli import main

sys.exit(main())
