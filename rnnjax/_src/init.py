"""The implementation of `rnnjax.init`, whose module docstring documents it.

Initialisers for recurrent weights, in the `jax.nn.initializers` signature.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from rnnjax._src.typing import Array, DType, Shape

__all__ = [
  "Initializer",
  "blockwise",
  "chrono_bias",
  "gaussian",
  "glorot_uniform",
  "identity",
  "in_float32",
  "lecun_normal",
  "orthogonal",
  "zeros",
]


class Initializer(Protocol):
  """The `jax.nn.initializers` signature: ``init(key, shape, dtype) -> array``."""

  def __call__(self, key: jax.Array, shape: Any, dtype: Any = ...) -> jax.Array:
    """An array of ``shape`` and ``dtype`` drawn with ``key``.

    Args:
      key: a PRNG key.
      shape: the array's shape, e.g. ``(H, H)``.
      dtype: its dtype (float32 by default).

    Returns:
      The initial array.
    """
    ...


def _is_half(dtype: Any) -> bool:
  """A floating dtype narrower than float32 (float16, bfloat16, float8...)."""
  dt = jnp.dtype(dtype)
  return bool(jnp.issubdtype(dt, jnp.floating) and dt.itemsize < 4)


def in_float32(init: Initializer) -> Initializer:
  """``init`` drawn in float32 and cast when asked for a half-precision dtype.

  jax's QR (the orthogonal initialiser) has no float16 or bfloat16 kernel on
  CPU, and a half-precision draw loses the property an initialiser is chosen
  for (``Wᵀ W = I`` holds to float32 precision before the cast, not after a
  half-precision QR); so every initialiser here draws in float32 and casts.
  Other dtypes pass through unchanged.

  Args:
    init: an `Initializer`.

  Returns:
    An `Initializer` with the same values as ``init`` in float32, cast to the
    half-precision dtype asked for.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> w = rj.init.in_float32(jax.nn.initializers.orthogonal())(
    ...   jax.random.key(0), (4, 4), jnp.bfloat16)
    >>> w.dtype
    dtype(bfloat16)
  """

  def wrapped(key: Array, shape: Shape, dtype: DType = jnp.float32) -> Array:
    if _is_half(dtype):
      return init(key, shape, jnp.float32).astype(dtype)
    return init(key, shape, dtype)

  return wrapped


def orthogonal(scale: float = 1.0, column_axis: int = -1) -> Initializer:
  """jax's orthogonal initialiser, the recurrent default; half-precision dtypes
  are drawn in float32 and cast (`in_float32`).

  Args:
    scale: the scale of the orthogonal matrix.
    column_axis: the axis that holds the orthogonal columns.

  Returns:
    An `Initializer`.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> w = rj.init.orthogonal()(jax.random.key(0), (3, 3), jnp.float16)
    >>> w.dtype, bool(jnp.allclose(w.T @ w, jnp.eye(3), atol=1e-2))
    (dtype('float16'), True)
  """
  return in_float32(jax.nn.initializers.orthogonal(scale, column_axis))


def glorot_uniform() -> Initializer:
  """jax's Glorot (Xavier) uniform initialiser (half precision drawn in float32).

  Returns:
    An `Initializer`.
  """
  return in_float32(jax.nn.initializers.glorot_uniform())


def lecun_normal() -> Initializer:
  """jax's LeCun normal initialiser, the input-weight default (half precision
  drawn in float32).

  Returns:
    An `Initializer`.
  """
  return in_float32(jax.nn.initializers.lecun_normal())


zeros = jax.nn.initializers.zeros
"""jax's zeros initialiser (itself an `Initializer`), the bias default."""


def identity(scale: float = 1.0) -> Initializer:
  """``W = scale * I``, the IRNN's recurrent matrix (Le, Jaitly & Hinton 2015).

  Args:
    scale: the diagonal value.

  Returns:
    An `Initializer` that needs a square ``[H, H]`` shape (else a ValueError).

  Examples:
    >>> import jax, rnnjax as rj
    >>> rj.init.identity(0.5)(jax.random.key(0), (2, 2)).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
  """

  def init(key: Array, shape: Shape, dtype: DType = jnp.float32) -> Array:
    del key
    if len(shape) != 2 or shape[0] != shape[1]:
      raise ValueError(f"identity init needs a square [H, H] shape, got {shape}")
    return scale * jnp.eye(shape[0], dtype=dtype)

  return init


def gaussian(gain: float = 1.0) -> Initializer:
  """``W_ij ~ N(0, gain² / fan_in)`` with fan_in = ``shape[0]`` (rows of ``h @ W``).

  For large H the spectral radius of ``W: [H, H]`` is about ``gain``: below 1
  the linear RNN contracts, above 1 it expands (the chaos studies' ensemble).

  Args:
    gain: ``g``, the scale of the entries' standard deviation.

  Returns:
    An `Initializer`.
  """

  def init(key: Array, shape: Shape, dtype: DType = jnp.float32) -> Array:
    return gain * jax.random.normal(key, shape, dtype) / jnp.sqrt(shape[0]).astype(dtype)

  return in_float32(init)


def blockwise(init: Initializer, blocks: int) -> Initializer:
  """Apply ``init`` to each of ``blocks`` column blocks of a ``[H, blocks*H]`` matrix.

  The gated cells' recurrent matrices ``w_h: [H, kH]`` are initialised this
  way, so that each gate's ``[H, H]`` block is, e.g., orthogonal on its own.

  Args:
    init: the initialiser of one ``[H, H]`` block.
    blocks: k, the number of blocks.

  Returns:
    An `Initializer` for ``[H, k·H]`` shapes (a ValueError for a shape whose
    columns do not split into ``blocks``).

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> w = rj.init.blockwise(rj.init.orthogonal(), 3)(jax.random.key(0), (4, 12))
    >>> [bool(jnp.allclose(b.T @ b, jnp.eye(4), atol=1e-5)) for b in jnp.split(w, 3, axis=1)]
    [True, True, True]
  """

  def block_init(key: Array, shape: Shape, dtype: DType = jnp.float32) -> Array:
    rows, cols = shape
    if cols % blocks:
      raise ValueError(f"shape {shape} does not split into {blocks} blocks")
    keys = jax.random.split(key, blocks)
    return jnp.concatenate([init(k, (rows, cols // blocks), dtype) for k in keys], axis=-1)

  return in_float32(block_init)


def chrono_bias(
  key: jax.Array, hidden_size: int, t_max: float, dtype: Any = jnp.float32
) -> jax.Array:
  """Chrono initialisation (Tallec & Ollivier 2018): ``b ~ log U[1, T_max - 1]``.

  The bias of the gate that keeps the old state (the LSTM forget gate, the
  GRU update gate ``z``); the LSTM input gate gets its negative. A gate biased
  to ``b`` keeps its state for about ``e^b`` steps, so the characteristic
  times spread over ``[1, T_max]``.

  Args:
    key: PRNG key.
    hidden_size: H.
    t_max: ``T_max``, the longest dependency expected (``> 2``).
    dtype: the bias's dtype.

  Returns:
    ``[H]``, the bias.

  Raises:
    ValueError: ``t_max <= 2``.
  """
  if not t_max > 2:
    raise ValueError(f"chrono initialisation needs t_max > 2, got {t_max}")
  if _is_half(dtype):
    return chrono_bias(key, hidden_size, t_max).astype(dtype)
  u = jax.random.uniform(key, (hidden_size,), dtype, 1.0, t_max - 1.0)
  return jnp.log(u)
