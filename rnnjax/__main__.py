"""``python -m rnnjax``: the ``rnnjax`` command (`rnnjax.apps.cli`)."""

import sys

from rnnjax.apps.cli import main

sys.exit(main())
