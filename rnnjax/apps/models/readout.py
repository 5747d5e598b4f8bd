"""The pieces every model head shares: a dense readout and losses over valid steps."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import rnnjax as rj


class DenseParams(NamedTuple):
  w: jax.Array  # [H, C]  the lecture's Uᵀ
  b: jax.Array  # [C]     b_y


def init_dense(key: jax.Array, fan_in: int, fan_out: int) -> DenseParams:
  """LeCun-normal weights and zero bias for ``h @ w + b``: ``[.., fan_in] -> [.., fan_out]``."""
  return DenseParams(
    rj.init.lecun_normal()(key, (fan_in, fan_out), jnp.float32), jnp.zeros((fan_out,), jnp.float32)
  )


def dense(params: DenseParams, h: jax.Array) -> jax.Array:
  """``h @ w + b`` for ``h: [..., H]`` (no rank promotion)."""
  return h @ params.w + params.b.reshape((1,) * (h.ndim - 1) + params.b.shape)


def valid_mask(T: int, lengths: jax.Array) -> jax.Array:
  """``[T, B]``: True at the steps before each sequence's length."""
  return jnp.arange(T)[:, None] < lengths[None, :]


def masked_mean(values: jax.Array, lengths: jax.Array) -> jax.Array:
  """The mean of ``values: [T, B]`` over the valid steps of each sequence
  (0 when there are none)."""
  mask = valid_mask(values.shape[0], lengths)
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-position cross-entropy (nats) of integer ``labels`` under ``logits: [..., C]``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
