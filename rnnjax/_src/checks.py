"""Argument checks shared by the core: each error names the call, the value
and the fix. They run at trace time, before any compute."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def positive_int(name: str, value: Any, what: str) -> int:
  """``value`` if it is an ``int`` (not a bool) ``>= 1``, else a ValueError."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{what}: {name} must be a positive int, got {value!r}")
  return int(value)


def choice(name: str, value: Any, choices: Collection[Any], what: str) -> Any:
  """``value`` if it is one of ``choices``, else a ValueError listing them."""
  if value not in choices:
    raise ValueError(f"{what}: unknown {name} {value!r}; expected one of {sorted(choices)}")
  return value


def concrete(x: Any) -> np.ndarray | None:
  """``x`` as a NumPy array when its value is known at trace time, else None."""
  try:
    return np.asarray(x)
  except (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
  ):
    return None


def lengths(lengths: Any, T: int, B: int, what: str) -> jax.Array:
  """``lengths: [B]`` integers in ``[0, T]`` (values checked when concrete)."""
  if not hasattr(lengths, "shape"):
    lengths = jnp.asarray(lengths)
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise TypeError(
      f"{what}: lengths must be integers, got dtype {lengths.dtype}; use lengths.astype(jnp.int32)"
    )
  if tuple(lengths.shape) != (B,):
    raise ValueError(
      f"{what}: lengths must have shape (B,) = ({B},), got "
      f"{tuple(lengths.shape)}; one length per sequence in the batch"
    )
  values = concrete(lengths)
  if values is not None and values.size and (values.min() < 0 or values.max() > T):
    raise ValueError(
      f"{what}: lengths must lie in [0, T={T}], got min "
      f"{values.min()} and max {values.max()}; clip them or pad "
      f"xs to the longest sequence"
    )
  return jnp.asarray(lengths)
