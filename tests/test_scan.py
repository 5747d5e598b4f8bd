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


# ---------------------------------------------------------------- padding and lengths (issue 20)


def _tanh_cell():
  """A custom cell without hints (the generic per-step VJP in every mode)."""

  def init(key, i):
    k1, k2 = jax.random.split(key)
    return {"w": 0.5 * jax.random.normal(k1, (i, 3)), "u": 0.5 * jax.random.normal(k2, (3, 3))}

  def step(p, c, x):
    h = jnp.tanh(x @ p["w"] + c @ p["u"])
    return h, h

  return rj.custom_cell(init, step, lambda s=(), d=jnp.float32: jnp.zeros((*s, 3), d))


PAD_CELLS = {"lstm": lambda: rj.lstm(3), "gru": lambda: rj.gru(3), "custom": _tanh_cell}


def _padded(xs, lengths, value):
  """``xs`` with ``value`` (a scalar, or "bad": NaN, +Inf, -Inf in turn) past each length."""
  T, B, I = xs.shape
  pad = (jnp.arange(T)[:, None] >= lengths[None, :])[..., None]
  if value == "bad":
    junk = jnp.array([jnp.nan, jnp.inf, -jnp.inf])[jnp.arange(T * B * I) % 3].reshape(xs.shape)
  else:
    junk = jnp.full(xs.shape, value)
  return jnp.where(pad, junk, xs), pad


@pytest.mark.parametrize("name", list(PAD_CELLS))
def test_nan_and_inf_padding_never_reach_gradients(name, key):
  """Issue 20: NaN/Inf past the lengths made w_x's gradient NaN under bptt and every
  leaf NaN under autodiff and checkpoint (a custom cell: NaN in all three). The
  gradients of params, xs and carry0 now equal those with zero padding, exactly."""
  cell = PAD_CELLS[name]()
  k1, k2 = jax.random.split(key)
  params = f64(cell.init(k1, 2))
  lengths = jnp.array([5, 2, 0])
  xs = jax.random.normal(k2, (5, 3, 2))
  carry0 = jax.tree.map(lambda c: 0.3 + c, cell.initial_carry((3,), jnp.float64))
  bad, pad = _padded(xs, lengths, "bad")
  zero, _ = _padded(xs, lengths, 0.0)
  for backward, reverse in (("bptt", False), ("autodiff", True), ("checkpoint", False)):

    def loss(p, x, c, backward=backward, reverse=reverse):
      carry, ys = rj.scan(cell, p, x, c, lengths=lengths, backward=backward, reverse=reverse)
      return jnp.sum(ys**2) + sum(jnp.sum(jnp.sin(l)) for l in jax.tree.leaves(carry))

    grad = jax.jit(jax.grad(loss, (0, 1, 2)))
    got, want = grad(params, bad, carry0), grad(params, zero, carry0)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(got)), backward
    assert_trees_close(got, want, rtol=0, atol=0)
    assert bool(jnp.all(jnp.where(pad, got[1], 0) == 0))  # zero on the padding


def test_padding_mask_is_one_select_and_absent_without_lengths(key):
  """The mask costs one select over xs, before the scan; without lengths there is none."""
  cell = rj.lstm(3)
  params = cell.init(key, 2)
  xs = jnp.ones((4, 2, 2))

  def selects_over_xs(**kw):
    jaxpr = jax.make_jaxpr(lambda x: rj.scan(cell, params, x, **kw))(xs).jaxpr
    return [
      e
      for e in jaxpr.eqns
      if (e.primitive.name == "select_n" or e.params.get("name") == "_where")
      and e.outvars[0].aval.shape == xs.shape
    ]

  assert len(selects_over_xs(lengths=np.array([4, 1]))) == 1
  assert selects_over_xs() == []


def _clip_cases():
  return jnp.array([9, -3, 2]), jnp.array([5, 0, 2])


@pytest.mark.parametrize("reverse", [False, True])
def test_traced_lengths_are_clipped_identically_in_both_directions(reverse, key):
  """Issue 20: under jit, L > T ran as T forwards but gave NaN in reverse; the rule is
  now clip to [0, T] everywhere: scan, flip, bidirectional, nnx.RNN, parallel_scan."""
  cell = rj.gru(3)
  params = f64(cell.init(key, 2))
  xs = jax.random.normal(key, (5, 3, 2))
  raw, clipped = _clip_cases()
  got = jax.jit(lambda L: rj.scan(cell, params, xs, lengths=L, reverse=reverse))(raw)
  assert_trees_close(got, rj.scan(cell, params, xs, lengths=clipped, reverse=reverse), 0, 0)
  # parallel_scan: the same compiled program given the raw and the clipped lengths (an
  # iterative solve compiled apart, as the eager call is, may round its last ulp
  # differently under the suite's XLA flags; that is not the clipping under test)
  solve = jax.jit(lambda L: rj.parallel_scan(cell, params, xs, lengths=L, reverse=reverse)[:2])
  got, want = solve(raw), solve(clipped)
  assert_trees_close(got, want, 0, 0)
  eager = rj.parallel_scan(cell, params, xs, lengths=clipped, reverse=reverse)[:2]
  assert_trees_close(got, eager, 0, 1e-15)
  assert bool(jnp.all(jnp.isfinite(got[1])))


def test_traced_lengths_are_clipped_in_flip_layers_and_nnx(key):
  from flax import nnx

  import rnnjax.nnx  # noqa: F401

  cell = rj.lstm(3)
  params = f64(cell.init(key, 2))
  xs = jax.random.normal(key, (5, 3, 2))
  raw, clipped = _clip_cases()
  assert_trees_close(jax.jit(rj.flip)(xs, raw), rj.flip(xs, clipped), 0, 0)
  bi = jax.jit(lambda L: rj.bidirectional((cell, params), (cell, params), xs, lengths=L))
  want = rj.bidirectional((cell, params), (cell, params), xs, lengths=clipped)
  assert_trees_close(bi(raw), want, 0, 0)
  st = jax.jit(lambda L: rj.stacked([(cell, params)], xs, lengths=L))
  assert_trees_close(st(raw), rj.stacked([(cell, params)], xs, lengths=clipped), 0, 0)
  rnn = rj.nnx.RNN(cell, 2, reverse=True, rngs=nnx.Rngs(0))
  xb = jnp.swapaxes(xs, 0, 1).astype(jnp.float32)
  got = nnx.jit(lambda m, L: m(xb, seq_lengths=L))(rnn, raw)
  assert_trees_close(got, rnn(xb, seq_lengths=clipped), 0, 0)
  assert bool(jnp.all(jnp.isfinite(got)))


def test_out_of_range_lengths_raise_eagerly_everywhere(key):
  """Concrete lengths outside [0, T] raise (rj.flip returned NaN for L > T)."""
  cell = rj.gru(3)
  params = cell.init(key, 2)
  xs = jnp.ones((5, 3, 2))
  raw, _ = _clip_cases()
  match = r"lengths must lie in \[0, T=5\], got min -3 and max 9"
  calls = {
    "rnnjax.flip": lambda: rj.flip(xs, raw),
    "rnnjax.scan": lambda: rj.scan(cell, params, xs, lengths=raw, reverse=True),
    "rnnjax.parallel_scan": lambda: rj.parallel_scan(cell, params, xs, lengths=raw),
  }
  for what, call in calls.items():
    with pytest.raises(ValueError, match=what + ": " + match):
      call()


def test_checkify_turns_clipped_lengths_into_an_error(key):
  """The checked mode: under checkify(errors=user_checks) a traced out-of-range length
  is an error naming the call; without checkify the check compiles to nothing."""
  from jax.experimental import checkify

  cell = rj.gru(3)
  params = cell.init(key, 2)
  xs = jnp.ones((5, 3, 2))
  raw, clipped = _clip_cases()

  def f(L):
    return rj.scan(cell, params, xs, lengths=L, reverse=True)[1]

  checked = checkify.checkify(jax.jit(f), errors=checkify.user_checks)
  err, _ = checked(raw)
  assert "rnnjax.scan: lengths must lie in [0, T=5], got [ 9 -3  2]" in err.get()
  err, ys = checked(clipped)
  assert err.get() is None
  assert_trees_close(ys, f(clipped), 0, 0)
  hlo = jax.jit(f).lower(raw).as_text()
  assert "check" not in hlo.lower().replace("checkpoint", "")
