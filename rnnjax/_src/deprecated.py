"""Top-level names that moved to a named submodule, kept for one release.

Each alias warns (``DeprecationWarning``) and calls the function where it now
lives: teaching references in `rnnjax.reference`, process-wide switches in
`rnnjax.host`. The top level of `rnnjax` is what a researcher calls.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from rnnjax._src import bptt, host

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _moved(fn: Callable[_P, _R], module: str) -> Callable[_P, _R]:
  """``fn`` under its old top-level name, warning that it moved to ``module``."""

  @functools.wraps(fn)
  def alias(*args: _P.args, **kwargs: _P.kwargs) -> _R:
    warnings.warn(
      f"rnnjax.{fn.__name__} moved to {module}.{fn.__name__}; the top-level alias goes "
      f"in the next release (import {module} and call it there)",
      DeprecationWarning,
      stacklevel=2,
    )
    return fn(*args, **kwargs)

  alias.__doc__ = f"Deprecated alias of `{module}.{fn.__name__}`.\n\n{fn.__doc__ or ''}"
  return alias


tune_host_allocator = _moved(host.tune_host_allocator, "rnnjax.host")
reference_elman_grads = _moved(bptt.reference_elman_grads, "rnnjax.reference")
