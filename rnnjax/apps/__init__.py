"""Applications built on rnnjax's public API: the character-level language
model and its training loop, long-range experiments, reports, visualisation,
data, checkpoints and the ``rnnjax`` command.

They need optax, orbax-checkpoint, flax, tqdm and matplotlib, which the core does
not: ``pip install 'rnnjax[apps]'``. Without them this package fails on import
with one line naming the extra. Nothing in the core imports from here.
"""

import importlib.util as _util

REQUIRES = ("optax", "orbax.checkpoint", "flax", "tqdm", "matplotlib")
"""The top-level modules the applications import, from the ``apps`` extra."""


def _missing() -> list[str]:
  missing = []
  for name in REQUIRES:
    try:
      found = _util.find_spec(name) is not None
    except ImportError:  # the parent package (orbax) is absent
      found = False
    if not found:
      missing.append(name)
  return missing


if _missing():
  raise ImportError(
    f"rnnjax.apps needs {', '.join(_missing())}, which the core does not install: "
    f"pip install 'rnnjax[apps]'"
  ) from None
