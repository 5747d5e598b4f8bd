"""Shared set-up of the peer suites: tiny sizes, flax cells with rnnjax's weights."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnnjax import interop

B, T, I, H = 2, 5, 3, 4


def flax_lstm(seed=0, dtype=jnp.float64):
  """An nnx.OptimizedLSTMCell with random weights, and the same weights as rj.lstm params."""
  cell = nnx.OptimizedLSTMCell(I, H, rngs=nnx.Rngs(seed), param_dtype=dtype)
  graphdef, state = nnx.split(cell)
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), dtype), state)
  cell = nnx.merge(graphdef, state)
  return cell, interop.from_flax("lstm", nnx.state(cell, nnx.Param))


def inputs(seed=1, shape=(B, T, I), dtype=jnp.float64):
  return jax.random.normal(jax.random.key(seed), shape, dtype)
