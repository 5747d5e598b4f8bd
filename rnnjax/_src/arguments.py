"""Argument checks shared by the core: each error names the call, the value
and the fix. They run at trace time, before any compute."""

from __future__ import annotations

import reprlib
from collections.abc import Collection
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def positive_int(name: str, value: Any, what: str) -> int:
  """``value`` if it is an ``int`` (not a bool) ``>= 1``, else a ValueError."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{what}: {name} must be a positive int, got {value!r}")
  return int(value)


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def unit_interval(name: str, value: Any, what: str) -> float:
  """``value`` if it is a real number in ``[0, 1)``, else a ValueError."""
  if (
    isinstance(value, bool)
    or not isinstance(value, (int, float, np.integer, np.floating))
    or not 0.0 <= value < 1.0
  ):
    raise ValueError(
      f"{what}: {name} must be a number in [0, 1), got {value!r}; "
      f"pass 0.0 to disable it (e.g. for evaluation)"
    )
  return float(value)


def prng_key(key: Any, what: str) -> Any:
  """``key`` if it is a JAX PRNG key, else a TypeError naming the fix.

  Accepted: a typed key array (``jax.random.key(seed)``, also traced or
  batched) or legacy ``uint32`` key data (``jax.random.PRNGKey(seed)``).
  """
  dtype = getattr(key, "dtype", None)
  if dtype is not None and (jnp.issubdtype(dtype, jax.dtypes.prng_key) or dtype == np.uint32):
    return key
  if dtype is None:
    got = f"{type(key).__name__} {reprlib.repr(key)}"
  else:
    got = f"an array of dtype {dtype} and shape {tuple(np.shape(key))}"
  seed = int(key) if _is_int(key) else "seed"
  raise TypeError(
    f"{what}: key must be a JAX PRNG key, got {got}; pass jax.random.key({seed}) "
    f"(split it with jax.random.split for several inits)"
  )


def batch_shape(value: Any, what: str) -> tuple[int, ...]:
  """``value`` as a tuple of non-negative ints (``(B,)``, ``()``, ...), else an
  error naming the fix."""
  if _is_int(value):
    raise TypeError(
      f"{what}: batch_shape must be a tuple of ints, got the int {value!r}; "
      f"use ({int(value)},) for a batch of {int(value)}, or () for one sequence"
    )
  if not isinstance(value, (tuple, list)) or not all(_is_int(d) for d in value):
    raise TypeError(
      f"{what}: batch_shape must be a tuple of ints such as (B,) or (), got "
      f"{type(value).__name__} {reprlib.repr(value)}"
    )
  if any(d < 0 for d in value):
    raise ValueError(f"{what}: batch_shape must have non-negative sizes, got {tuple(value)}")
  return tuple(int(d) for d in value)


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
  """``lengths: [B]`` integers in ``[0, T]``: the one rule every function that
  takes lengths follows.

  Concrete lengths (eager calls, constants under ``jit``) outside ``[0, T]``
  raise a ValueError. Traced lengths (under ``jit``) cannot be read at trace
  time: they are clipped to ``[0, T]`` (a length above T means the whole
  sequence, a negative one none of it), the same in both directions. Under
  ``jax.experimental.checkify`` with ``errors=checkify.user_checks`` an
  out-of-range traced length is an error instead (a ``checkify.debug_check``,
  which compiles to nothing when the function is not checkified).
  """
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
  fix = "clip them or pad xs to the longest sequence"
  values = concrete(lengths)
  if values is not None:
    if values.size and (values.min() < 0 or values.max() > T):
      raise ValueError(
        f"{what}: lengths must lie in [0, T={T}], got min "
        f"{values.min()} and max {values.max()}; {fix}"
      )
    return jnp.asarray(lengths)
  lengths = jnp.asarray(lengths)
  checkify.debug_check(
    jnp.all((lengths >= 0) & (lengths <= T)),
    f"{what}: lengths must lie in [0, T={T}], got {{}}; {fix}",
    lengths,
  )
  return jnp.clip(lengths, 0, T)
