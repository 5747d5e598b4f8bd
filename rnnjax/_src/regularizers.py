"""Recurrent regularisers, functional, with explicit PRNG keys.

Each is applied to a training forward pass and is the identity at evaluation
(``rate=0`` or no key):

* `locked_dropout` (variational dropout, Gal & Ghahramani 2016): one Bernoulli
  mask per sequence and feature, the same at every step, on a layer's inputs
  or outputs ``[T, B, F]``;
* `weight_drop` (DropConnect on the recurrent matrix, Wan et al. 2013;
  Merity et al. 2018): one mask on ``w_h`` per forward pass, applied to the
  params before `rnnjax.scan`, so every backward mode (the hand-written BPTT
  included) differentiates through it by the chain rule.

Both scale the kept entries by ``1 / (1 − rate)`` (inverted dropout), so the
expectation over masks equals the unregularised value.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src.typing import Array, Params


def _check_rate(rate: float, what: str) -> None:
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"{what}: rate must lie in [0, 1), got {rate!r}; use 0 for evaluation")


def locked_dropout(key: Array | None, xs: Array, rate: float, *, time_major: bool = True) -> Array:
  """Variational (locked) dropout: one mask per sequence, shared across time.

  Args:
    key: PRNG key (None, with ``rate=0``, at evaluation).
    xs: ``[T, B, F]`` (or ``[B, T, F]`` with ``time_major=False``).
    rate: drop probability in ``[0, 1)``; 0 returns ``xs`` unchanged.
    time_major: the layout of ``xs``.

  Returns:
    ``xs * m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)`` of shape ``[B, F]``,
    broadcast over the time axis.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> ys = rj.locked_dropout(jax.random.key(0), jnp.ones((5, 2, 4)), 0.5)
    >>> bool((ys == ys[:1]).all())               # the same mask at every step
    True
  """
  _check_rate(rate, "rnnjax.locked_dropout")
  if rate == 0.0:
    return xs
  if key is None:
    raise ValueError("rnnjax.locked_dropout: rate > 0 needs key=...; pass rate=0 for evaluation")
  if xs.ndim != 3:
    raise ValueError(
      f"rnnjax.locked_dropout: xs must have rank 3 ({'[T, B, F]' if time_major else '[B, T, F]'}), "
      f"got shape {tuple(xs.shape)}"
    )
  B, F = (xs.shape[1], xs.shape[2]) if time_major else (xs.shape[0], xs.shape[2])
  keep = jax.random.bernoulli(key, 1.0 - rate, (B, F))  # one mask per sequence
  mask = keep[None] if time_major else keep[:, None]  # broadcast over time
  return jnp.where(mask, xs / (1.0 - rate), jnp.zeros((), xs.dtype))


def weight_drop(key: Array | None, params: Params, rate: float, *, field: str = "w_h") -> Params:
  """DropConnect on a weight matrix of ``params`` (default the recurrent ``w_h``).

  One mask per call: call it once per training forward pass, outside
  `rnnjax.scan`, so the mask is fixed for every step of every sequence.

  Args:
    key: PRNG key (None, with ``rate=0``, at evaluation).
    params: a cell's params with the field ``field``.
    rate: drop probability in ``[0, 1)``; 0 returns ``params`` unchanged.
    field: which params field to mask.

  Returns:
    ``params`` with ``field`` replaced by ``w * m / (1 - rate)``,
    ``m ~ Bernoulli(1 - rate)`` of the same shape.

  Examples:
    >>> import jax, rnnjax as rj
    >>> cell = rj.lstm(4)
    >>> p = cell.init(jax.random.key(0), 3)
    >>> q = rj.weight_drop(jax.random.key(1), p, 0.5)
    >>> bool(((q.w_h == 0) | (q.w_h == 2 * p.w_h)).all()), bool((q.w_x == p.w_x).all())
    (True, True)
  """
  _check_rate(rate, "rnnjax.weight_drop")
  if rate == 0.0:
    return params
  if key is None:
    raise ValueError("rnnjax.weight_drop: rate > 0 needs key=...; pass rate=0 for evaluation")
  w: Any = getattr(params, field, None)
  if w is None:
    raise ValueError(
      f"rnnjax.weight_drop: params of type {type(params).__name__} have no field {field!r}; "
      f"pass field= the name of the weight to mask"
    )
  keep = jax.random.bernoulli(key, 1.0 - rate, w.shape)
  return params._replace(**{field: jnp.where(keep, w / (1.0 - rate), jnp.zeros((), w.dtype))})
