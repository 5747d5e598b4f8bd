"""What haiku's own suite asserts about ``hk.ResetCore`` (haiku/_src/recurrent_test.py,
ResetCoreTest), asserted of ``rj.scan(resets=...)``, plus the same weights run
through ``hk.ResetCore(hk.LSTM) + hk.dynamic_unroll`` from a non-zero state.

Not applicable: ``test_allow_batched_only_cores``, ``test_input_conform`` and
``test_input_conform_fails`` check how haiku broadcasts a pytree of reset flags
against a pytree state; rnnjax's ``resets`` is one ``[T, B]`` bool array, checked
in tests/test_resets.py.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, B, I, H = 6, 3, 2, 4
RESETS = np.zeros((T, B), bool)
RESETS[[2, 4], 0] = RESETS[0, 1] = RESETS[3, 2] = True  # b=1: a new episode at t=0


def _haiku_lstm_and_rnnjax_params(xs):
  """hk.LSTM's params, and the same weights as rj.lstm's: haiku splits its one
  [I+H, 4H] matrix into gates (i, g, f, o) and adds 1 to f inside the step."""
  fn = hk.without_apply_rng(
    hk.transform(lambda x, s, r: hk.dynamic_unroll(hk.ResetCore(hk.LSTM(H)), (x, r), s))
  )
  state = hk.LSTMState(hidden=jnp.zeros((B, H)), cell=jnp.zeros((B, H)))
  params = fn.init(jax.random.key(0), xs, state, jnp.asarray(RESETS))
  params = jax.tree.map(
    lambda a: jax.random.normal(jax.random.key(a.size), a.shape, xs.dtype) * 0.5, params
  )
  (w,) = [p["w"] for p in params.values()]
  (b,) = [p["b"] for p in params.values()]

  def ifgo(a):
    i, g, f, o = jnp.split(a, 4, axis=-1)
    return jnp.concatenate([i, f, g, o], axis=-1)

  ours = rj.LSTMParams(w_x=ifgo(w[:I]), w_h=ifgo(w[I:]), b=ifgo(b.at[2 * H : 3 * H].add(1.0)))
  return fn, params, ours


def test_reset_core_dynamic_unroll_matches_from_a_nonzero_state():
  """A reset restarts from the core's initial state (zeros), not from the state the
  unroll began with: the RL case of a rollout segment resuming the last one's state."""
  xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
  fn, params, ours = _haiku_lstm_and_rnnjax_params(xs)
  h0 = jax.random.normal(jax.random.key(2), (B, H), jnp.float64)
  c0 = jax.random.normal(jax.random.key(3), (B, H), jnp.float64)
  ys_hk, state = fn.apply(params, xs, hk.LSTMState(hidden=h0, cell=c0), jnp.asarray(RESETS))
  carry, ys = rj.scan(rj.lstm(H), ours, xs, rj.LSTMCarry(h0, c0), resets=jnp.asarray(RESETS))
  np.testing.assert_allclose(ys, ys_hk, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(carry.h, state.hidden, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(carry.c, state.cell, rtol=1e-10, atol=1e-12)


def _increment():
  """haiku's test core: the state counts steps, the output is the state."""
  return rj.custom_cell(
    lambda key, n: {},
    lambda p, s, x: (s + 1.0, s + 1.0),
    lambda shape=(), dtype=jnp.float32: jnp.zeros((*shape, H), dtype),
    name="increment",
    output_size=H,
  )


def test_unbatched_counts_restart_at_the_reset():
  """test_unbatched: a reset at t=2 restarts the count (one sequence; rnnjax keeps a
  batch axis of 1)."""
  cell = _increment()
  resets = (jnp.arange(5) == 2)[:, None]
  _, ys = rj.scan(cell, {}, jnp.zeros((5, 1, 1)), resets=resets)
  np.testing.assert_array_equal(ys[:, 0, 0], [1, 2, 1, 2, 3])


def test_resetting_the_same_input_twice():
  """test_resetting: without a flag the reset core is the core; element 0 reset at
  step 1 on a repeated input repeats step 0."""
  cell = rj.gru(H)
  params = cell.init(jax.random.key(0), I)
  x = jax.random.normal(jax.random.key(1), (1, 4, I), jnp.float64)
  xs = jnp.concatenate([x, x])
  resets = jnp.zeros((2, 4), bool).at[1, 0].set(True)
  c_core, ys_core = rj.scan(cell, params, xs)
  c_reset, ys_reset = rj.scan(cell, params, xs, resets=resets)
  np.testing.assert_allclose(ys_core[0], ys_reset[0], rtol=1e-12)
  np.testing.assert_allclose(ys_core[1, 1:], ys_reset[1, 1:], rtol=1e-12)
  np.testing.assert_allclose(c_core[1:], c_reset[1:], rtol=1e-12)
  np.testing.assert_allclose(ys_core[0, 0], ys_reset[1, 0], rtol=1e-12)
  np.testing.assert_allclose(c_reset[0], ys_core[0, 0], rtol=1e-12)
  for mode in ("bptt", "autodiff", "checkpoint"):  # every backward mode's forward agrees
    _, ys_mode = rj.scan(cell, params, xs, resets=resets, backward=mode)
    np.testing.assert_allclose(ys_mode, ys_reset, rtol=1e-12)


@pytest.mark.xfail(
  strict=True,
  reason="on purpose: with reverse=True rnnjax reads the episodes in time order (each "
  "episode runs from its last step to its first, so both directions of a bidirectional "
  "layer see the same episodes); haiku's reversed unroll applies the flags in processing "
  "order (docs/interop.md)",
)
def test_reversed_unroll_equals_forward_unroll_of_reversed_inputs():
  cell = _increment()
  resets = (jnp.arange(7) == 2)[:, None]
  xs = jnp.zeros((7, 1, 1))
  _, fwd = rj.scan(cell, {}, xs[::-1], resets=resets[::-1])
  _, rev = rj.scan(cell, {}, xs, resets=resets, reverse=True)
  np.testing.assert_array_equal(fwd[::-1], rev)
