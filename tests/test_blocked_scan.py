"""blocked_scan.prefix against a Python loop and lax.associative_scan, with a
combine that does not commute (affine maps of 2×2 matrices), across block
boundaries, padding and reverse; its compiled program does not grow with T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rnnjax._src import blocked_scan, linear_scan


def _affine(first, then):
  """``s ↦ A2 (A1 s + b1) + b2``: associative, not commutative."""
  a1, b1 = first
  a2, b2 = then
  return a2 @ a1, (a2 @ b1[..., None])[..., 0] + b2


IDENTITY = (jnp.eye(2, dtype=jnp.float64), jnp.zeros(2, jnp.float64))


def _elems(t, seed=0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((t, 2, 2)), rng.standard_normal((t, 2))


def _loop(elems, reverse):
  a, b = elems
  order = range(len(a) - 1, -1, -1) if reverse else range(len(a))
  acc, out = None, [None] * len(a)
  for t in order:
    acc = (a[t], b[t]) if acc is None else _affine(acc, (a[t], b[t]))
    out[t] = acc
  return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("t", "block"), [(1, 16), (16, 16), (17, 16), (50, 16), (50, 3), (7, 1)])
def test_equals_a_python_loop_and_associative_scan(t, block, reverse):
  elems = _elems(t)
  got = jax.jit(lambda e: blocked_scan.prefix(_affine, e, IDENTITY, reverse=reverse, block=block))(
    elems
  )
  want = _loop(elems, reverse)
  lax_out = jax.jit(lambda e: lax.associative_scan(_affine, e, reverse=reverse))(elems)
  for g, w, x in zip(got, want, lax_out, strict=True):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, x, rtol=1e-12, atol=1e-12)


def test_empty_sequence_and_jit():
  a, b = _elems(0)
  out = blocked_scan.prefix(_affine, (a, b), IDENTITY)
  assert out[0].shape == (0, 2, 2) and out[1].shape == (0, 2)
  elems = _elems(40, seed=1)
  jitted = jax.jit(lambda e: blocked_scan.prefix(_affine, e, IDENTITY, block=4))(elems)
  np.testing.assert_allclose(jitted[1], _loop(elems, False)[1], rtol=1e-12, atol=1e-12)


def test_linear_solve_blocked_equals_unblocked():
  rng = np.random.default_rng(2)
  jac = jnp.asarray(rng.standard_normal((37, 3, 4, 4)) / 2)
  b, s0 = jnp.asarray(rng.standard_normal((37, 3, 4))), jnp.asarray(rng.standard_normal((3, 4)))
  solve = jax.jit(linear_scan.solve, static_argnames=("diag", "reverse", "blocked"))
  for diag in (False, True):
    j = jac[..., 0] if diag else jac
    for reverse in (False, True):
      want = solve(j, b, s0, diag=diag, reverse=reverse)
      got = solve(j, b, s0, diag=diag, reverse=reverse, blocked=True)
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_compiled_size_does_not_grow_with_t():
  """The point of the module: the combine appears a fixed number of times in the
  program, where lax.associative_scan's count grows with log T."""

  def count(scan, t):
    text = jax.jit(scan).lower(_elems(t)).as_text()
    return text.count("stablehlo.dot_general")

  ours = lambda e: blocked_scan.prefix(_affine, e, IDENTITY)  # noqa: E731
  theirs = lambda e: lax.associative_scan(_affine, e)  # noqa: E731
  assert count(ours, 100) == count(ours, 5000)
  assert count(theirs, 5000) > count(theirs, 100)


def test_bad_input_names_the_shapes():
  a, b = _elems(5)
  with pytest.raises(ValueError, match=r"same leading \(time\) axis.*\(5, 2, 2\).*\(4, 2\)"):
    blocked_scan.prefix(_affine, (a, b[:4]), IDENTITY)
  with pytest.raises(ValueError, match="block must be at least 1"):
    blocked_scan.prefix(_affine, (a, b), IDENTITY, block=0)
