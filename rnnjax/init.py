"""Initialisers for recurrent weights, in the `jax.nn.initializers` signature.

Every initialiser is ``init(key, shape, dtype) -> array``. The recurrent
matrix of a gated cell, ``w_h: [H, kH]``, is initialised block by block
(each ``[H, H]`` gate block on its own) by `blockwise`, as flax does with
one Dense per gate.

* `orthogonal` (default): ``Wᵀ W = I``; every singular value is 1, so the
  linear part of ``∂h_j/∂h_{j-1} = diag(f'(z_j)) W`` neither grows nor
  shrinks a gradient (Saxe et al. 2014).
* `identity`: ``W = scale·I``, the IRNN of Le, Jaitly & Hinton (2015), meant
  for ReLU RNNs.
* `gaussian(gain)`: ``W_ij ~ N(0, g²/H)``; spectral radius ≈ g for large H, the
  chaos studies' ensemble (Sompolinsky, Crisanti & Sommers 1988).
* `glorot_uniform`, `lecun_normal`: jax's, for the input weights.
* `chrono_bias`: Tallec & Ollivier (2018): forget bias ``log U[1, T_max-1]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

orthogonal = jax.nn.initializers.orthogonal
glorot_uniform = jax.nn.initializers.glorot_uniform
lecun_normal = jax.nn.initializers.lecun_normal
zeros = jax.nn.initializers.zeros


def identity(scale: float = 1.0):
  """``W = scale * I`` (IRNN). Needs a square shape."""

  def init(key, shape, dtype=jnp.float32):
    del key
    if len(shape) != 2 or shape[0] != shape[1]:
      raise ValueError(f"identity init needs a square [H, H] shape, got {shape}")
    return scale * jnp.eye(shape[0], dtype=dtype)

  return init


def gaussian(gain: float = 1.0):
  """``W_ij ~ N(0, gain² / fan_in)`` with fan_in = ``shape[0]`` (rows of ``h @ W``)."""

  def init(key, shape, dtype=jnp.float32):
    return gain * jax.random.normal(key, shape, dtype) / jnp.sqrt(shape[0]).astype(dtype)

  return init


def blockwise(init, blocks: int):
  """Apply ``init`` to each of ``blocks`` column blocks of a ``[H, blocks*H]`` matrix."""

  def block_init(key, shape, dtype=jnp.float32):
    rows, cols = shape
    if cols % blocks:
      raise ValueError(f"shape {shape} does not split into {blocks} blocks")
    keys = jax.random.split(key, blocks)
    return jnp.concatenate(
        [init(k, (rows, cols // blocks), dtype) for k in keys], axis=-1)

  return block_init


def chrono_bias(key, hidden_size: int, t_max: float, dtype=jnp.float32):
  """Chrono initialisation (Tallec & Ollivier 2018): ``b ~ log U[1, T_max - 1]``.

  Returns the bias of the gate that keeps the old state (the LSTM forget gate,
  the GRU update gate ``z``); the LSTM input gate gets its negative.
  """
  if not t_max > 2:
    raise ValueError(f"chrono initialisation needs t_max > 2, got {t_max}")
  u = jax.random.uniform(key, (hidden_size,), dtype, 1.0, t_max - 1.0)
  return jnp.log(u)
