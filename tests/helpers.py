"""Shared references for the tests: a Python loop of cell.step, and tree comparisons."""

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj

CELLS = {
    "elman-tanh": lambda H: rj.elman(H),
    "elman-relu": lambda H: rj.elman(H, "relu"),
    "gru-before": lambda H: rj.gru(H, reset="before"),
    "gru-after": lambda H: rj.gru(H, reset="after"),
    "lstm": lambda H: rj.lstm(H),
}


def f64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def loop_reference(cell, params, xs, carry0, lengths=None, reverse=False):
  """Each sequence run alone, unpadded, by a Python loop of ``cell.step``.

  Returns ``(carry, ys)`` laid out like ``rj.scan``'s ([T, B, H], zeros past
  each length; ys[t] belongs to xs[t])."""
  T, B, _ = xs.shape
  lengths = [T] * B if lengths is None else [int(l) for l in np.asarray(lengths)]
  carries, ys = [], []
  for b in range(B):
    carry = jax.tree.map(lambda c: c[b], carry0)
    L = lengths[b]
    order = range(L - 1, -1, -1) if reverse else range(L)
    out = [None] * T
    for t in order:
      carry, y = cell.step(params, carry, xs[t, b])
      out[t] = y
    zero = jnp.zeros_like(cell.output(carry))
    ys.append(jnp.stack([zero if o is None else o for o in out]))
    carries.append(carry)
  carry = jax.tree.map(lambda *c: jnp.stack(c), *carries)
  return carry, jnp.stack(ys, axis=1)


def assert_trees_close(a, b, rtol=1e-10, atol=1e-12):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def max_rel_err(a, b):
  """max over leaves of ‖a − b‖∞ / max(‖b‖∞, tiny)."""
  errs = []
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    errs.append(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30))
  return max(errs)
