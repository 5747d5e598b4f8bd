"""The hand-written BPTT against jax.grad (float64), the lecture-literal
reference, numerical differences, checkpoint memory and truncated BPTT."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import rnnjax as rj
from rnnjax import tbptt
from tests.helpers import CELLS, assert_trees_close, f64, max_rel_err


def _problem(name, T, B, I, H, seed):
  cell = CELLS[name](H)
  k = jax.random.split(jax.random.key(seed), 5)
  params = f64(cell.init(k[0], I))
  params = params._replace(b=params.b + 0.2 * jax.random.normal(k[1], params.b.shape))
  if getattr(params, "b_hn", None) is not None:
    params = params._replace(b_hn=0.2 * jax.random.normal(k[1], params.b_hn.shape))
  xs = jax.random.normal(k[2], (T, B, I))
  carry0 = jax.tree.map(
    lambda c: 0.5 * jax.random.normal(k[3], c.shape), cell.initial_carry((B,), jnp.float64)
  )
  w = jax.random.normal(k[4], (T, B, H))
  return cell, params, xs, carry0, w


def _loss(cell, w, lengths, reverse, backward):
  def loss(params, xs, carry0):
    carry, ys = rj.scan(
      cell, params, xs, carry0, lengths=lengths, reverse=reverse, backward=backward
    )
    return jnp.sum(w * ys) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))

  return loss


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
  name=st.sampled_from(sorted(CELLS)),
  T=st.integers(1, 9),
  B=st.integers(1, 4),
  I=st.integers(1, 5),
  H=st.integers(1, 6),
  use_lengths=st.booleans(),
  reverse=st.booleans(),
  mode=st.sampled_from(["bptt", "checkpoint"]),
  seed=st.integers(0, 2**16),
)
def test_gradients_equal_autodiff_float64(name, T, B, I, H, use_lengths, reverse, mode, seed):
  cell, params, xs, carry0, w = _problem(name, T, B, I, H, seed)
  lengths = None
  if use_lengths:
    lengths = jax.random.randint(jax.random.key(seed + 1), (B,), 0, T + 1)
  args = (params, xs, carry0)
  both = jax.jit(
    lambda *a: (
      jax.grad(_loss(cell, w, lengths, reverse, mode), argnums=(0, 1, 2))(*a),
      jax.grad(_loss(cell, w, lengths, reverse, "autodiff"), argnums=(0, 1, 2))(*a),
    )
  )
  g, ref = both(*args)
  assert max_rel_err(g, ref) <= 1e-10


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("with_lengths", [False, True])
def test_check_grads_numerical(name, with_lengths):
  """jax.test_util.check_grads: the VJP against finite differences (float64)."""
  cell, params, xs, carry0, w = _problem(name, 5, 2, 3, 4, 7)
  lengths = jnp.array([5, 2]) if with_lengths else None
  f = _loss(cell, w, lengths, with_lengths, "bptt")
  check_grads(f, (params, xs, carry0), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear"])
def test_fast_path_equals_lecture_reference(activation):
  """Σ_t ∂L_t/∂h_t Σ_i (Π_j ∂h_j/∂h_{j-1}) ∂⁺h_i/∂W, every product formed explicitly."""
  cell = rj.elman(4, activation)
  params = f64(cell.init(jax.random.key(0), 3))
  params = params._replace(b=0.1 + jnp.zeros(4))
  T = 6
  xs = jax.random.normal(jax.random.key(1), (T, 3))
  h0 = 0.3 * jax.random.normal(jax.random.key(2), (4,))
  dys = jax.random.normal(jax.random.key(3), (T, 4))
  ref = rj.reference.reference_elman_grads(params, xs, h0, dys, activation)
  fast = jax.grad(lambda p: jnp.sum(dys * rj.scan(cell, p, xs[:, None], h0[None])[1][:, 0]))(params)
  assert_trees_close(fast, ref, rtol=1e-11, atol=1e-13)


def test_gradients_flow_to_inputs_and_initial_carry():
  cell, params, xs, carry0, w = _problem("lstm", 6, 3, 2, 4, 1)
  _, g_x, g_c = jax.grad(_loss(cell, w, None, False, "bptt"), argnums=(0, 1, 2))(params, xs, carry0)
  assert float(jnp.min(jnp.abs(g_x).sum(-1))) > 0  # every input position
  assert float(jnp.min(jnp.abs(g_c.c))) > 0 and float(jnp.min(jnp.abs(g_c.h))) > 0


def test_residuals_of_the_custom_vjp_are_the_small_set():
  """bptt saves carries and gates only; autodiff saves more (compiled temporaries)."""
  cell = rj.lstm(32)
  p = cell.init(jax.random.key(0), 16)
  xs = jax.ShapeDtypeStruct((400, 4, 16), jnp.float32)
  mem = {}
  for mode in ("autodiff", "bptt", "checkpoint"):

    def loss(p, x, mode=mode):
      return jnp.sum(rj.scan(cell, p, x, backward=mode)[1] ** 2)

    g = jax.grad(loss, argnums=(0, 1))
    mem[mode] = jax.jit(g).lower(p, xs).compile().memory_analysis().temp_size_in_bytes
  assert mem["bptt"] < mem["autodiff"]
  assert mem["checkpoint"] < 0.25 * mem["autodiff"]


def test_checkpoint_memory_grows_like_sqrt_T():
  """Quadrupling T roughly doubles checkpoint's activation memory, and
  quadruples autodiff's."""
  cell = rj.gru(32, reset="after")
  p = cell.init(jax.random.key(0), 8)

  def temp(mode, T):
    g = jax.grad(lambda p, x: jnp.sum(rj.scan(cell, p, x, backward=mode)[1] ** 2), argnums=0)
    xs = jax.ShapeDtypeStruct((T, 4, 8), jnp.float32)
    stats = jax.jit(g).lower(p, xs).compile().memory_analysis()
    # the outputs ys [T, B, H] and inputs are O(T) for every mode; count the rest
    return stats.temp_size_in_bytes - 2 * T * 4 * 32 * 4

  ad = temp("autodiff", 4096) / temp("autodiff", 1024)
  ck = temp("checkpoint", 4096) / temp("checkpoint", 1024)
  assert ad > 3.5
  assert ck < 2.6


def test_checkpoint_every_option_and_errors():
  cell, params, xs, carry0, w = _problem("gru-after", 10, 2, 3, 4, 3)
  ref = jax.grad(_loss(cell, w, None, False, "autodiff"))(params, xs, carry0)

  @jax.jit
  def grads(params):
    def loss(p, k):
      carry, ys = rj.scan(cell, p, xs, carry0, backward="checkpoint", checkpoint_every=k)
      return jnp.sum(w * ys) + jnp.sum(carry**2)

    return [jax.grad(loss)(params, k) for k in (1, 3, 10, 17)]

  for g in grads(params):
    assert max_rel_err(g, ref) <= 1e-10
  with pytest.raises(ValueError, match="checkpoint_every must be a positive int, got -1"):
    rj.scan(cell, params, xs, backward="checkpoint", checkpoint_every=-1)


# ----------------------------------------------------------------- truncated BPTT


def _tbptt_setup():
  cell = rj.gru(4)
  params = {"rnn": f64(cell.init(jax.random.key(0), 3)), "head": jnp.ones((4,)) * 0.5}
  xs = jax.random.normal(jax.random.key(1), (12, 2, 3))
  targets = jax.random.normal(jax.random.key(2), (12, 2))

  def loss_fn(p, ys, t):
    return jnp.mean((ys @ p["head"] - t) ** 2)

  return cell, params, xs, targets, loss_fn


def test_tbptt_full_window_equals_full_bptt():
  cell, params, xs, targets, loss_fn = _tbptt_setup()
  run = tbptt.truncated_bptt(cell, loss_fn, k1=12, k2=12)
  losses, grads, _ = run(params, xs, targets)
  full = jax.value_and_grad(lambda p: loss_fn(p, rj.scan(cell, p["rnn"], xs)[1], targets))(params)
  assert len(losses) == 1
  np.testing.assert_allclose(losses[0], full[0], rtol=1e-12)
  assert_trees_close(grads[0], full[1], rtol=1e-10)


@pytest.mark.parametrize(("k1", "k2"), [(3, 3), (3, 5), (4, 8), (2, 7)])
def test_tbptt_matches_stop_gradient_reference(k1, k2):
  """Window u: loss on [stop-k1, stop), gradient cut at start = stop-k2."""
  cell, params, xs, targets, loss_fn = _tbptt_setup()
  run = tbptt.truncated_bptt(cell, loss_fn, k1=k1, k2=k2)
  losses, grads, carry = run(params, xs, targets)
  wins = tbptt.windows(12, k1, k2)
  assert len(losses) == len(wins) == 12 // k1
  c_full, _ = rj.scan(cell, params["rnn"], xs[: wins[-1].stop])
  np.testing.assert_allclose(carry, c_full, rtol=1e-12)
  for loss, g, w in zip(losses, grads, wins, strict=True):

    def ref(p, w=w):
      c0 = (
        jax.lax.stop_gradient(rj.scan(cell, params["rnn"], xs[: w.start])[0])
        if w.start
        else cell.initial_carry((2,), jnp.float64)
      )
      _, ys = rj.scan(cell, p["rnn"], xs[w.start : w.stop], c0)
      return loss_fn(p, ys[w.loss_from - w.start :], targets[w.loss_from : w.stop])

    v, gr = jax.jit(jax.value_and_grad(ref))(params)
    np.testing.assert_allclose(loss, v, rtol=1e-12)
    assert_trees_close(g, gr, rtol=1e-10)


@pytest.mark.parametrize(("k1", "k2"), [(3, 3), (3, 5), (4, 8), (2, 7)])
def test_tbptt_with_resets_matches_stop_gradient_reference(k1, k2):
  """Resets sliced per window; a reset restarts from the cell's zeros, not from
  run's carry (0.3 here) nor the window's."""
  cell, params, xs, targets, loss_fn = _tbptt_setup()
  carry0 = jnp.full((2, 4), 0.3)
  resets = np.zeros((12, 2), bool)
  resets[[2, 7], 0] = resets[[5, 9], 1] = True  # 7: a window start for (3, 5)
  resets = jnp.asarray(resets)
  run = tbptt.truncated_bptt(cell, loss_fn, k1=k1, k2=k2)
  losses, grads, carry = run(params, xs, targets, carry0, resets=resets)
  wins = tbptt.windows(12, k1, k2)
  c_full, _ = rj.scan(
    cell, params["rnn"], xs[: wins[-1].stop], carry0, resets=resets[: wins[-1].stop]
  )
  np.testing.assert_allclose(carry, c_full, rtol=1e-12)
  for loss, g, w in zip(losses, grads, wins, strict=True):

    def ref(p, w=w):
      c = jax.lax.stop_gradient(
        rj.scan(cell, params["rnn"], xs[: w.start], carry0, resets=resets[: w.start])[0]
      )
      ys = []
      for t in range(w.start, w.stop):  # step by step, resetting to zeros
        c = jnp.where(resets[t][:, None], 0.0, c)
        c, y = cell.step(p["rnn"], c, xs[t])
        ys.append(y)
      ys = jnp.stack(ys)
      return loss_fn(p, ys[w.loss_from - w.start :], targets[w.loss_from : w.stop])

    v, gr = jax.jit(jax.value_and_grad(ref))(params)
    np.testing.assert_allclose(loss, v, rtol=1e-12)
    assert_trees_close(g, gr, rtol=1e-10)


def test_tbptt_errors():
  with pytest.raises(ValueError, match=r"k2=2 < k1=3 would leave the losses of 1 steps"):
    tbptt.windows(10, 3, 2)
  with pytest.raises(ValueError, match=r"k1 must be a positive int, got 0"):
    tbptt.windows(10, 0, 2)
  with pytest.raises(ValueError, match=r"the stream has T=2 steps, fewer than k1=3"):
    tbptt.windows(2, 3, 3)


class _ElmanPlus(NamedTuple):
  w_x: jax.Array
  w_h: jax.Array
  b: jax.Array
  extra: jax.Array  # a leaf no rule of the built-in Elman cell names


def test_every_params_leaf_gets_its_true_gradient_or_a_trace_time_error():
  """Gradients are complete by construction: a leaf nobody reads gets 0 (as autodiff
  says), and a leaf the recurrence reads without a rule is an error naming it."""
  cell = rj.elman(3)
  base = f64(cell.init(jax.random.key(0), 2))
  params = _ElmanPlus(*base, extra=jnp.array([7.0, 7.0, 7.0]))
  xs = jax.random.normal(jax.random.key(1), (5, 2, 2), jnp.float64)

  def grads(cell, backward):
    def loss(p):
      return jnp.sum(rj.scan(cell, p, xs, backward=backward)[1] ** 2)

    return jax.grad(loss)(params)

  bptt, auto = grads(cell, "bptt"), grads(cell, "autodiff")
  np.testing.assert_array_equal(bptt.extra, [0.0, 0.0, 0.0])
  assert_trees_close(bptt, auto)

  def fast_step(p, h, zx):  # the recurrence now reads `extra` too
    return cell.fast_step(p._replace(w_h=p.w_h * p.extra[0]), h, zx)

  scaled = cell._replace(fast_step=fast_step, step=None)
  assert float(jnp.abs(grads(scaled, "autodiff").extra).max()) > 0
  with pytest.raises(
    ValueError,
    match=r"fast_step reads params \['.extra'\], but its "
    r"recurrent_grads gives gradients only to \['w_h'\]",
  ):
    grads(scaled, "bptt")
