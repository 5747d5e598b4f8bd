"""``python -m rnnjax``: the ``rnnjax`` command (`rnnjax.apps.cli`)."""

import sys

from rnnjax.apps.cli import run

sys.exit(run())
