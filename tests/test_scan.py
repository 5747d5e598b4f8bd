"""rj.scan against a Python loop of cell.step, sequence by sequence, unpadded."""

import itertools
from functools import partial

import chex
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
  ("name", "lengths", "reverse"), list(itertools.product(CELLS, *[(False, True)] * 2))
)
def test_scan_equals_python_loop(name, lengths, reverse, key):
  """With lengths, the padding holds garbage (1e3): each sequence still equals
  itself run alone, unpadded, outputs past its length are zero and its carry is
  the one after its last valid step."""
  cell, params, xs, carry0 = _setup(name, key)
  L = LENGTHS if lengths else None
  padded = (
    jnp.where(jnp.arange(T)[:, None, None] < LENGTHS[None, :, None], xs, 1e3) if lengths else xs
  )
  unroll = 3 if reverse else 1  # lax.scan's unroll is independent of the cell and the lengths
  carry, ys = rj.scan(cell, params, padded, carry0, lengths=L, reverse=reverse, unroll=unroll)
  ref_carry, ref_ys = loop_reference(cell, params, xs, carry0, L, reverse)
  assert_trees_close((carry, ys), (ref_carry, ref_ys), rtol=1e-12, atol=1e-13)
  if lengths:  # exactly zero past each length, not merely close to the reference's zeros
    np.testing.assert_array_equal(ys[3:, 1], 0.0)
    np.testing.assert_array_equal(ys[:, 2], 0.0)


def _loop_loss(w, fn, params, xs, carry0):
  carry, ys = fn(params, xs, carry0)
  return jnp.sum(w * ys) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))


@pytest.mark.parametrize("name", list(CELLS))
def test_scan_gradients_equal_python_loop(name, key):
  """Every backward mode against jax.grad of the Python loop (compiled once per
  configuration; the modes share it)."""
  T, LENGTHS = 5, jnp.array([5, 2, 0])  # a short loop keeps compiles quick
  cell, params, xs, carry0 = _setup(name, key, T=T)
  w = jax.random.normal(jax.random.key(9), (T, B, H))
  # forward with lengths is also held to autodiff by test_bptt's random cases
  for L, rev in [(None, False), (LENGTHS, True)]:

    def ref(p, x, c, L=L, rev=rev):
      return loop_reference(cell, p, x, c, L, rev)

    @jax.jit
    def fast_grads(params, xs, carry0, L=L, rev=rev):
      def grads(backward):
        def fast(p, x, c):
          return rj.scan(cell, p, x, c, lengths=L, reverse=rev, backward=backward)

        return jax.grad(partial(_loop_loss, w, fast), argnums=(0, 1, 2))(params, xs, carry0)

      return [grads(b) for b in ("autodiff", "bptt", "checkpoint")]

    g_ref = jax.jit(jax.grad(partial(_loop_loss, w, ref), argnums=(0, 1, 2)))(params, xs, carry0)
    for g_fast in fast_grads(params, xs, carry0):
      assert_trees_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)


def test_padding_gets_zero_gradient(key):
  cell, params, xs, carry0 = _setup("lstm", key)

  @jax.jit
  def grads(xs):
    def loss(x, backward):
      return jnp.sum(rj.scan(cell, params, x, carry0, lengths=LENGTHS, backward=backward)[1] ** 2)

    return [jax.grad(loss)(xs, b) for b in ("bptt", "autodiff", "checkpoint")]

  mask = np.arange(T)[:, None] < np.asarray(LENGTHS)[None, :]
  for g in grads(xs):
    np.testing.assert_array_equal(np.asarray(g)[~mask], 0.0)
    assert np.all(np.abs(np.asarray(g)[mask]).sum(-1) > 0)


def test_batch_major_layout(key):
  cell, params, xs, carry0 = _setup("gru-after", key)
  c1, y1 = rj.scan(cell, params, xs, carry0, lengths=LENGTHS, reverse=True)
  c2, y2 = rj.scan(
    cell, params, jnp.swapaxes(xs, 0, 1), carry0, lengths=LENGTHS, reverse=True, time_major=False
  )
  chex.assert_shape(y2, (B, T, H))
  assert_trees_close((c1, y1), (c2, jnp.swapaxes(y2, 0, 1)), rtol=0, atol=0)


class ScanJitTest(chex.TestCase):
  """rj.scan with and without jax.jit (chex variants), both against the loop."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_scan_equals_python_loop_with_and_without_jit(self):
    cell, params, xs, carry0 = _setup("lstm", jax.random.key(0))

    @self.variant
    def run(params, xs, carry0, lengths):
      return rj.scan(cell, params, xs, carry0, lengths=lengths, reverse=True)

    ref = loop_reference(cell, params, xs, carry0, LENGTHS, reverse=True)
    assert_trees_close(run(params, xs, carry0, LENGTHS), ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", list(CELLS))
def test_vmap_and_per_example_grad(name, key):
  cell, params, xs, _ = _setup(name, key)

  def f(p, x, L):
    return rj.scan(cell, p, x, lengths=L)[1]

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
  def loss(p, x):
    return jnp.sum(rj.scan(cell, p, x[:, None])[1] ** 2)

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
  if dtype != jnp.float64:  # low precision stays close to the float64 result
    ref = rj.scan(cell, f64(params), xs.astype(jnp.float64))[1]
    tol = {jnp.bfloat16: 5e-2, jnp.float32: 1e-5}[dtype]
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
  cell, params, xs, _ = _setup("lstm", key)
  jaxpr = jax.make_jaxpr(lambda p, x: rj.scan(cell, p, x, backward="autodiff"))(params, xs)
  scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
  assert len(scans) == 1
  body = scans[0].params["jaxpr"].jaxpr
  dots = [e for e in body.eqns if e.primitive.name == "dot_general"]
  assert len(dots) == 1
  assert dots[0].invars[1].aval.shape == (H, 4 * H)
