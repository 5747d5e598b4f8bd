"""Shared references for the tests: a Python loop of cell.step, and tree comparisons."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj

# The variants every cell test runs over: (registry name, options).
VARIANTS = {
  "elman-tanh": ("elman", {}),
  "elman-relu": ("elman", {"activation": "relu"}),
  "gru-before": ("gru", {"reset": "before"}),
  "gru-after": ("gru", {"reset": "after"}),
  "lstm": ("lstm", {}),
}
CELLS = {
  k: (lambda H, name=name, kw=kw: rj.make_cell(name, H, **kw)) for k, (name, kw) in VARIANTS.items()
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
    carry = jax.tree.map(lambda c, b=b: c[b], carry0)
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
  """Equal structure, and every pair of leaves equal in shape and close in value."""
  chex.assert_trees_all_equal_shapes(a, b)
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)


def max_rel_err(a, b):
  """max over leaves of ‖a − b‖∞ / max(‖b‖∞, tiny)."""
  chex.assert_trees_all_equal_shapes(a, b)
  errs = []
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    errs.append(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30))
  return max(errs)
