"""minGRU and minLSTM (rnnjax/_src/cells/minrnn.py): the step against a NumPy
transcription of Feng et al. (2024)'s equations, rj.scan against a loop of the
step, and the log-space parallel scan against rj.scan, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax._src.cells.minrnn import MinGRUParams, mingru, minlstm, parallel_trajectory
from tests.helpers import assert_trees_close

T, B, I, H = 7, 3, 5, 4
CELLS = {"mingru": mingru, "minlstm": minlstm}


def _setup(kind, seed=0, scale=1.5):
  """float64 params (pre-activations of both signs, so both branches of g run),
  inputs [T, B, I] and a random h0 [B, H] with negative entries."""
  rng = np.random.default_rng(seed)
  cell = CELLS[kind](H)
  shapes = jax.eval_shape(lambda k: cell.init(k, I), jax.random.key(0))
  params = type(shapes)(*(jnp.asarray(scale * rng.standard_normal(s.shape)) for s in shapes))
  xs = jnp.asarray(rng.standard_normal((T, B, I)))
  h0 = jnp.asarray(rng.standard_normal((B, H)))
  return cell, params, xs, h0


def np_g(x):
  return np.where(x >= 0, x + 0.5, 1.0 / (1.0 + np.exp(-np.minimum(x, 0.0))))


def np_step(kind, params, h, x):
  """The paper's equations, in NumPy."""
  sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
  zx = np.asarray(x) @ np.asarray(params.w_x) + np.asarray(params.b)
  if kind == "mingru":
    z = sig(zx[..., :H])
    return (1.0 - z) * h + z * np_g(zx[..., H:])
  f, i = sig(zx[..., :H]), sig(zx[..., H : 2 * H])
  return f / (f + i) * h + i / (f + i) * np_g(zx[..., 2 * H :])


@pytest.mark.parametrize("kind", list(CELLS))
def test_step_is_the_papers_equations(kind):
  cell, params, xs, h0 = _setup(kind)
  new, y = cell.step(params, h0, xs[0])
  want = np_step(kind, params, np.asarray(h0), xs[0])
  np.testing.assert_allclose(np.asarray(new), want, rtol=1e-13, atol=1e-14)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(new))
  zx = xs[0] @ params.w_x
  assert bool(jnp.any(zx > 0)) and bool(jnp.any(zx < 0))  # both branches of g ran


@pytest.mark.parametrize("kind", list(CELLS))
def test_scan_is_a_loop_of_the_step(kind):
  cell, params, xs, h0 = _setup(kind)
  h, want = h0, []
  for t in range(T):
    h, y = cell.step(params, h, xs[t])
    want.append(y)
  carry, ys = rj.scan(cell, params, xs, h0)
  assert_trees_close((carry, ys), (h, jnp.stack(want)), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("start", ["zero", "random"])
@pytest.mark.parametrize("scale", [1.5, 20.0])  # 20: saturated gates, log a ≈ −100 per step
def test_parallel_trajectory_equals_scan(kind, start, scale):
  cell, params, xs, h0 = _setup(kind, scale=scale)
  h0 = jnp.zeros_like(h0) if start == "zero" else h0
  want = rj.scan(cell, params, xs, h0)[1]
  assert_trees_close(parallel_trajectory(kind, params, xs, h0), want, rtol=1e-10, atol=1e-10)
  assert_trees_close(parallel_trajectory(cell, params, xs, h0), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", list(CELLS))
def test_parallel_gradients_equal_scan(kind):
  cell, params, xs, h0 = _setup(kind)
  w = jnp.asarray(np.random.default_rng(1).standard_normal((T, B, H)))

  def loss(fn, p, x, c):
    return jnp.sum(w * jnp.tanh(fn(p, x, c)))

  parallel = lambda p, x, c: parallel_trajectory(kind, p, x, c)  # noqa: E731
  grads = jax.grad(loss, argnums=(1, 2, 3))(parallel, params, xs, h0)
  for backward in ("bptt", "autodiff"):
    scanned = lambda p, x, c, bw=backward: rj.scan(cell, p, x, c, backward=bw)[1]  # noqa: E731
    want = jax.grad(loss, argnums=(1, 2, 3))(scanned, params, xs, h0)
    assert_trees_close(grads, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", list(CELLS))
def test_check_cell_passes(kind):
  report = rj.check_cell(CELLS[kind](H), I)
  assert all(c.passed for c in report.values()), report


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4"])
def test_bad_hidden_size_is_named(kind, bad):
  with pytest.raises(ValueError, match=rf"rnnjax\.{kind}: hidden_size must be a positive int"):
    CELLS[kind](bad)


def test_parallel_trajectory_errors_name_the_shapes():
  _, params, xs, h0 = _setup("mingru")
  with pytest.raises(ValueError, match="kind must be 'mingru' or 'minlstm'"):
    parallel_trajectory("gru", params, xs, h0)
  with pytest.raises(ValueError, match=r"h0 has shape \(4, 4\).*need \(3, 4\)"):
    parallel_trajectory("mingru", params, xs, jnp.zeros((4, H)))
  with pytest.raises(ValueError, match=r"xs has shape \(7, 3, 2\).*I = 5"):
    parallel_trajectory("mingru", params, xs[..., :2], h0)
  with pytest.raises(ValueError, match=r"minlstm needs w_x \[I, 3H\]"):
    parallel_trajectory("minlstm", MinGRUParams(params.w_x[:, :7], params.b[:7]), xs, h0)
