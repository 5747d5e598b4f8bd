"""rj.scan(..., resets=...): concatenated episodes in one scan equal each episode
run alone, in values and in gradients, in every backward mode (the built-ins'
rule-based BPTT, the custom cells' per-step BPTT, autodiff, checkpoint), with
lengths, reverse and time_major=False. As haiku's ResetCore: the first episode
resumes from the carry the scan starts from (non-zero here), every later one
starts from the cell's initial carry (zeros) or from reset_carry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests.helpers import CELLS, assert_trees_close, f64

T, B, I, H, O = 7, 3, 3, 4, 2
MODES = ("bptt", "autodiff", "checkpoint")

# Episode starts per sequence: b=0 has episodes [0,3) [3,5) [5,6) [6,7); b=1 a
# flag at t=0 (it starts from zeros, not from the scan's carry) and one reset at 2;
# b=2 none (padding flags are set below).
RESETS = np.zeros((T, B), bool)
RESETS[[3, 5, 6], 0] = True
RESETS[[0, 2], 1] = True


def _init(key, input_size):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
    "w": jax.random.normal(k1, (input_size + H, H)) / 2,
    "b": 0.1 * jax.random.normal(k2, (H,)),
    "out": jax.random.normal(k3, (H, O)),
  }


def _step(p, carry, x):
  """h' = tanh([x, h] W + b), m' = (m + h') / 2, y = m' U: a two-leaf carry and
  an output that is not part of it."""
  h, m = carry
  h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"] + p["b"][None, :])
  m = 0.5 * (m + h)
  return (h, m), m @ p["out"]


def _zeros(shape=(), dtype=jnp.float32):
  return (jnp.zeros((*shape, H), dtype), jnp.zeros((*shape, H), dtype))


leaky = rj.custom_cell(_init, _step, _zeros, name="leaky", output_size=O)


def _setup(name):
  cell = leaky if name == "custom" else CELLS[name](H)
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  params = f64(cell.init(k1, I))
  if name != "custom":
    params = params._replace(b=params.b + 0.3 * jax.random.normal(k4, params.b.shape))
  xs = jax.random.normal(k2, (T, B, I), jnp.float64)
  carry0 = jax.tree.map(
    lambda c: 0.5 * jax.random.normal(k3, c.shape, jnp.float64),
    cell.initial_carry((B,), jnp.float64),
  )
  return cell, params, xs, carry0


def episodes_alone(cell, params, xs, carry0, resets, lengths=None, reverse=False, reset_carry=None):
  """Each episode of each sequence run by its own rj.scan, laid out like rj.scan
  with resets: zeros past each length, the carry of the last episode (of the first
  with reverse, the one run last). The episode run first (the first, or with
  reverse the last) starts from carry0, every other from reset_carry (default the
  cell's zeros; leaves [B, ...] or one sequence's, shared)."""
  n_out = rj.scan(cell, params, xs[:1, :1], jax.tree.map(lambda c: c[:1], carry0))[1].shape[-1]
  cols, finals = [], []
  for b in range(B):
    L = T if lengths is None else int(lengths[b])
    starts = [0] + [t for t in range(1, L) if resets[t, b]]
    c0 = jax.tree.map(lambda c, b=b: c[b : b + 1], carry0)
    if reset_carry is None:
      r0 = cell.initial_carry((1,), xs.dtype)
    else:
      r0 = jax.tree.map(
        lambda r, c, b=b: jnp.broadcast_to(r, c.shape)[b : b + 1], reset_carry, carry0
      )
    pieces, carries = [], []
    ends = [*starts[1:], L]
    # the episode the scan runs first resumes carry0, unless (forward) a flag at t=0
    # restarts it too, as haiku's ResetCore does
    first = len(starts) - 1 if reverse else (None if resets[0, b] else 0)
    for n, (s, e) in enumerate(zip(starts, ends, strict=True)):
      if e > s:
        start = c0 if n == first else r0
        c, y = rj.scan(
          cell, params, xs[s:e, b : b + 1], start, reverse=reverse, backward="autodiff"
        )
        pieces.append(y)
        carries.append(c)
    pieces.append(jnp.zeros((T - L, 1, n_out), xs.dtype))
    cols.append(jnp.concatenate(pieces))
    finals.append(c0 if not carries else carries[0] if reverse else carries[-1])
  return jax.tree.map(lambda *c: jnp.concatenate(c), *finals), jnp.concatenate(cols, axis=1)


def _outputs_and_grads(fn, w):
  """``fn``'s ``(carry, ys)`` and the gradients of a loss over every output and
  the final carry, compiled together."""

  def loss(params, xs, carry0):
    carry, ys = fn(params, xs, carry0)
    return jnp.sum(w * ys) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))

  return jax.jit(lambda *a: (fn(*a), jax.grad(loss, argnums=(0, 1, 2))(*a)))


def _check_against_episodes(name, lengths=None, reverse=False, resets=RESETS, reset_carry=None):
  cell, params, xs, carry0 = _setup(name)
  w = jax.random.normal(jax.random.key(7), (T, B, O if name == "custom" else H), jnp.float64)

  def alone(p, x, c):
    return episodes_alone(cell, p, x, c, resets, lengths, reverse, reset_carry)

  want = _outputs_and_grads(alone, w)(params, xs, carry0)
  L = None if lengths is None else jnp.asarray(lengths)
  for mode in MODES:

    def fn(p, x, c, mode=mode):
      return rj.scan(
        cell,
        p,
        x,
        c,
        lengths=L,
        resets=jnp.asarray(resets),
        reset_carry=reset_carry,
        reverse=reverse,
        backward=mode,
      )

    assert_trees_close(_outputs_and_grads(fn, w)(params, xs, carry0), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["lstm", "gru-after", "custom"])
def test_values_and_gradients_equal_each_episode_run_alone(name):
  """LSTM and GRU (reset-after, whose recurrent rule also gives b_hn) take the
  rule-based BPTT, the custom cell the per-step one; checkpoint chunks of ⌈√7⌉ = 3
  steps put resets inside and on the edges of chunks."""
  _check_against_episodes(name)


@pytest.mark.parametrize(("name", "reverse"), [("lstm", True), ("custom", False)])
def test_with_lengths_and_reverse(name, reverse):
  """With reverse=True each episode runs backwards from its own last step, and the
  carry returned is the first episode's. Flags on padding change nothing (b=0's
  flag at t=6 falls just past its length 6, b=2's at t=5 past its length 4)."""
  resets = RESETS.copy()
  resets[5, 2] = True  # past b=2's length 4
  _check_against_episodes(name, lengths=np.array([6, 7, 4]), reverse=reverse, resets=resets)


@pytest.mark.parametrize("mode", MODES)
def test_no_gradient_crosses_a_reset(mode):
  """The gradient w.r.t. the inputs before b=1's reset at t=2 does not depend on
  the loss of any output after it, nor on the final carry."""
  cell, params, xs, carry0 = _setup("lstm")
  resets = jnp.asarray(RESETS)

  def loss(x, w, v):
    carry, ys = rj.scan(cell, params, x, carry0, resets=resets, backward=mode)
    return jnp.sum(w * ys) + jnp.sum(v * carry.c)

  w = jax.random.normal(jax.random.key(1), (T, B, H), jnp.float64)
  later = jnp.zeros((T, B, 1)).at[2:, 1].set(1.0)  # b=1's outputs after the reset
  grad = jax.jit(jax.grad(loss))
  g = grad(xs, w, jnp.ones((B, H)))
  g_other = grad(xs, w + 5.0 * later, jnp.ones((B, H)).at[1].set(-3.0))
  np.testing.assert_array_equal(g_other[:2, 1], g[:2, 1])
  assert float(jnp.abs(g_other[2:, 1] - g[2:, 1]).max()) > 1e-3  # the later inputs do see it
  g_after = grad(xs, w * later, jnp.zeros((B, H)).at[1].set(1.0))  # only the later losses
  np.testing.assert_array_equal(g_after[:2, 1], 0.0)


def test_batch_major_and_jit():
  """time_major=False takes resets [B, T], like xs; resets may be traced."""
  cell, params, xs, carry0 = _setup("gru-after")
  resets = jnp.asarray(RESETS)
  want = rj.scan(cell, params, xs, carry0, resets=resets)
  run = jax.jit(lambda x, r: rj.scan(cell, params, x, carry0, resets=r, time_major=False))
  carry, ys = run(jnp.swapaxes(xs, 0, 1), resets.T)
  assert_trees_close((carry, jnp.swapaxes(ys, 0, 1)), want, rtol=1e-12, atol=1e-13)
  no_flags = rj.scan(cell, params, xs, carry0, resets=jnp.zeros((T, B), bool))
  assert_trees_close(no_flags, rj.scan(cell, params, xs, carry0), rtol=1e-12, atol=1e-13)
  empty = rj.scan(cell, params, xs[:0], carry0, resets=jnp.zeros((0, B), bool))
  assert empty[1].shape == (0, B, H)


def test_bad_resets_raise_naming_the_shapes_and_the_fix():
  cell, params, xs, _ = _setup("lstm")
  with pytest.raises(TypeError, match=r"resets must be bool .*int32 with shape \(7, 3\).*astype"):
    rj.scan(cell, params, xs, resets=jnp.zeros((T, B), jnp.int32))
  with pytest.raises(ValueError, match=r"resets must have shape \[T, B\] = \(7, 3\).*got \(7,\)"):
    rj.scan(cell, params, xs, resets=jnp.zeros((T,), bool))
  with pytest.raises(
    ValueError, match=r"\[B, T\] = \(3, 7\).*got \(7, 3\).*looks transposed.*resets\.T"
  ):
    rj.scan(cell, params, jnp.swapaxes(xs, 0, 1), resets=RESETS, time_major=False)


def test_a_reset_restarts_from_the_cells_initial_carry_not_the_scans_start():
  """haiku's ResetCore: after a reset the state is the core's initial state, not the
  state the unroll began with (a previous rollout segment's). The old behaviour
  (restart from the scan's carry) gave steps 3.. of b=0 another value."""
  cell, params, xs, carry0 = _setup("gru-after")
  resets = jnp.asarray(RESETS)
  _, ys = rj.scan(cell, params, xs, carry0, resets=resets)
  _, fresh = rj.scan(cell, params, xs[3:5, :1])  # b=0's second episode, from zeros
  np.testing.assert_allclose(ys[3:5, :1], fresh, rtol=1e-12)
  _, stale = rj.scan(cell, params, xs[3:5, :1], jax.tree.map(lambda c: c[:1], carry0))
  assert float(jnp.abs(ys[3:5, :1] - stale).max()) > 1e-2


@pytest.mark.parametrize(("shared", "reverse"), [(False, False), (True, True)])
def test_reset_carry_values_and_gradients(shared, reverse):
  """A custom (learned) reset state: batched [B, H] or one [H] for every sequence;
  its gradient sums every reset's, in every backward mode (with lengths)."""
  cell, params, xs, carry0 = _setup("lstm")
  shape = (H,) if shared else (B, H)
  r0 = rj.LSTMCarry(
    h=jax.random.normal(jax.random.key(11), shape, jnp.float64),
    c=jnp.full(shape, -0.4, jnp.float64),
  )
  w = jax.random.normal(jax.random.key(7), (T, B, H), jnp.float64)
  lengths = np.array([6, 7, 4])

  def loss_of(fn):
    def loss(p, r):
      carry, ys = fn(p, r)
      return jnp.sum(w * ys) + jnp.sum(jnp.cos(carry.c))

    return jax.jit(lambda p, r: (fn(p, r), jax.grad(loss, argnums=(0, 1))(p, r)))

  want = loss_of(lambda p, r: episodes_alone(cell, p, xs, carry0, RESETS, lengths, reverse, r))(
    params, r0
  )
  for mode in MODES:

    def fn(p, r, mode=mode):
      return rj.scan(
        cell,
        p,
        xs,
        carry0,
        lengths=jnp.asarray(lengths),
        resets=jnp.asarray(RESETS),
        reset_carry=r,
        reverse=reverse,
        backward=mode,
      )

    got = loss_of(fn)(params, r0)
    assert_trees_close(got, want, rtol=1e-10, atol=1e-12)
    assert float(jnp.abs(got[1][1].h).max()) > 1e-3  # the reset state gets a gradient


def test_bad_reset_carry_raises_naming_the_shapes():
  cell, params, xs, carry0 = _setup("lstm")
  resets = jnp.asarray(RESETS)
  with pytest.raises(ValueError, match=r"reset_carry is given without resets"):
    rj.scan(cell, params, xs, reset_carry=carry0)
  with pytest.raises(ValueError, match=r"reset_carry has structure"):
    rj.scan(cell, params, xs, resets=resets, reset_carry=carry0.h)
  bad = rj.LSTMCarry(jnp.zeros((2, H)), jnp.zeros((2, H)))
  with pytest.raises(ValueError, match=r"reset_carry leaf has shape \(2, 4\).*\(3, 4\)"):
    rj.scan(cell, params, xs, resets=resets, reset_carry=bad)
