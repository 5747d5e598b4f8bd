"""rj.scan against a Python loop of cell.step, sequence by sequence, unpadded."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests.helpers import CELLS, assert_trees_close, f64, loop_reference

T, B, I, H = 7, 3, 4, 5
LENGTHS = jnp.array([7, 3, 0])


def _setup(name, key, T=T, B=B):
  cell = CELLS[name](H)
  k1, k2, k3 = jax.random.split(key, 3)
  params = f64(cell.init(k1, I))
  params = params._replace(b=params.b + 0.1 * jax.random.normal(k3, params.b.shape))
  xs = jax.random.normal(k2, (T, B, I))
  carry0 = jax.tree.map(
    lambda c: 0.3 * jax.random.normal(k3, c.shape), cell.initial_carry((B,), jnp.float64)
  )
  return cell, params, xs, carry0


@pytest.mark.parametrize(
  "name,lengths,reverse,unroll",
  [(n, l, r, u) for n, l, r, u in itertools.product(CELLS, [False, True], [False, True], [1, 3])],
)
def test_scan_equals_python_loop(name, lengths, reverse, unroll, key):
  cell, params, xs, carry0 = _setup(name, key)
  L = LENGTHS if lengths else None
  carry, ys = rj.scan(cell, params, xs, carry0, lengths=L, reverse=reverse, unroll=unroll)
  ref_carry, ref_ys = loop_reference(cell, params, xs, carry0, L, reverse)
  assert_trees_close((carry, ys), (ref_carry, ref_ys), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("backward", ["autodiff", "bptt", "checkpoint"])
def test_scan_gradients_equal_python_loop(name, backward, key):
  T, LENGTHS = 5, jnp.array([5, 2, 0])  # a short loop keeps compiles quick
  cell, params, xs, carry0 = _setup(name, key, T=T)
  w = jax.random.normal(jax.random.key(9), (T, B, H))

  def loss(fn, params, xs, carry0):
    carry, ys = fn(params, xs, carry0)
    return jnp.sum(w * ys) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))

  # forward with lengths is also held to autodiff by test_bptt's random cases
  for L, rev in [(None, False), (LENGTHS, True)]:
    fast = lambda p, x, c: rj.scan(cell, p, x, c, lengths=L, reverse=rev, backward=backward)
    ref = lambda p, x, c: loop_reference(cell, p, x, c, L, rev)
    g_fast = jax.jit(jax.grad(lambda *a: loss(fast, *a), argnums=(0, 1, 2)))(params, xs, carry0)
    g_ref = jax.jit(jax.grad(lambda *a: loss(ref, *a), argnums=(0, 1, 2)))(params, xs, carry0)
    assert_trees_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CELLS))
def test_padding_never_changes_valid_outputs(name, key):
  """A padded batch equals each sequence run alone at its own length."""
  cell, params, xs, carry0 = _setup(name, key, T=9, B=3)
  lengths = jnp.array([9, 5, 2])
  garbage = jnp.where(jnp.arange(9)[:, None, None] < lengths[None, :, None], xs, 1e3)
  for reverse in (False, True):
    carry, ys = rj.scan(cell, params, garbage, carry0, lengths=lengths, reverse=reverse)
    for b in range(3):
      L = int(lengths[b])
      cb = jax.tree.map(lambda c: c[b : b + 1], carry0)
      c_alone, y_alone = rj.scan(cell, params, xs[:L, b : b + 1], cb, reverse=reverse)
      np.testing.assert_allclose(ys[:L, b], y_alone[:, 0], rtol=1e-12)
      np.testing.assert_array_equal(ys[L:, b], 0.0)
      assert_trees_close(
        jax.tree.map(lambda c: c[b], carry), jax.tree.map(lambda c: c[0], c_alone), rtol=1e-12
      )


def test_padding_gets_zero_gradient(key):
  cell, params, xs, carry0 = _setup("lstm", key)
  for backward in ("bptt", "autodiff", "checkpoint"):
    g = jax.grad(
      lambda x: jnp.sum(
        rj.scan(cell, params, x, carry0, lengths=LENGTHS, backward=backward)[1] ** 2
      )
    )(xs)
    mask = np.arange(T)[:, None] < np.asarray(LENGTHS)[None, :]
    np.testing.assert_array_equal(np.asarray(g)[~mask], 0.0)
    assert np.all(np.abs(np.asarray(g)[mask]).sum(-1) > 0)


def test_batch_major_layout(key):
  cell, params, xs, carry0 = _setup("gru-after", key)
  c1, y1 = rj.scan(cell, params, xs, carry0, lengths=LENGTHS, reverse=True)
  c2, y2 = rj.scan(
    cell, params, jnp.swapaxes(xs, 0, 1), carry0, lengths=LENGTHS, reverse=True, time_major=False
  )
  assert y2.shape == (B, T, H)
  assert_trees_close((c1, y1), (c2, jnp.swapaxes(y2, 0, 1)), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CELLS))
def test_jit_vmap_grad(name, key):
  cell, params, xs, carry0 = _setup(name, key)
  f = lambda p, x, L: rj.scan(cell, p, x, lengths=L)[1]
  eager = f(params, xs, LENGTHS)
  np.testing.assert_allclose(jax.jit(f)(params, xs, LENGTHS), eager, rtol=1e-12)
  # vmap over an extra leading axis of inputs, lengths and params
  xs2 = jnp.stack([xs, 2 * xs])
  batched = jax.vmap(f, in_axes=(None, 0, None))(params, xs2, LENGTHS)
  np.testing.assert_allclose(batched[1], f(params, 2 * xs, LENGTHS), rtol=1e-12)
  p2 = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
  per_params = jax.vmap(f, in_axes=(0, None, None))(p2, xs, LENGTHS)
  np.testing.assert_allclose(
    per_params[1], f(jax.tree.map(lambda a: 0.5 * a, params), xs, LENGTHS), rtol=1e-12
  )
  # grad under jit and vmap (per-example gradients)
  loss = lambda p, x: jnp.sum(rj.scan(cell, p, x[:, None])[1] ** 2)
  per_ex = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 1)))(params, xs)
  one = jax.grad(loss)(params, xs[:, 1])
  assert_trees_close(jax.tree.map(lambda g: g[1], per_ex), one, rtol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
@pytest.mark.parametrize("name", ["elman-tanh", "gru-after", "gru-before", "lstm"])
def test_dtype_is_preserved(name, dtype, key):
  cell = CELLS[name](H)
  params = jax.tree.map(lambda a: a.astype(dtype), cell.init(key, I))
  xs = jax.random.normal(key, (T, B, I), dtype)
  carry, ys = rj.scan(cell, params, xs)
  assert ys.dtype == dtype
  assert all(c.dtype == dtype for c in jax.tree.leaves(carry))
  g = jax.grad(lambda p: jnp.sum(rj.scan(cell, p, xs)[1].astype(jnp.float32)))(params)
  assert all(l.dtype == dtype for l in jax.tree.leaves(g))
  # low precision stays close to the float64 result
  ref = rj.scan(cell, f64(params), xs.astype(jnp.float64))[1]
  tol = {jnp.bfloat16: 5e-2, jnp.float32: 1e-5, jnp.float64: 1e-12}[dtype]
  np.testing.assert_allclose(np.asarray(ys, np.float64), ref, atol=tol, rtol=tol)


def test_bfloat16_compute_with_float32_params(key):
  """dtype (compute) and param_dtype (storage) are separate, as in flax."""
  cell = rj.lstm(H, dtype=jnp.bfloat16)
  params = cell.init(key, I)
  assert params.w_x.dtype == jnp.float32
  carry, ys = rj.scan(cell, params, jax.random.normal(key, (T, B, I), jnp.float32))
  assert ys.dtype == jnp.bfloat16 and carry.c.dtype == jnp.bfloat16
  cell64 = rj.lstm(H, param_dtype=jnp.float64)
  assert cell64.init(key, I).w_h.dtype == jnp.float64


def test_hoisted_projection_leaves_one_matmul_per_step(key):
  """Only the recurrent matmul remains inside the scan body of the forward."""
  cell, params, xs, carry0 = _setup("lstm", key)
  jaxpr = jax.make_jaxpr(lambda p, x: rj.scan(cell, p, x, backward="autodiff"))(params, xs)
  scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
  assert len(scans) == 1
  body = scans[0].params["jaxpr"].jaxpr
  dots = [e for e in body.eqns if e.primitive.name == "dot_general"]
  assert len(dots) == 1
  assert dots[0].invars[1].aval.shape == (H, 4 * H)
