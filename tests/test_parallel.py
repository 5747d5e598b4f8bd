"""rj.parallel_scan (DEER, quasi-DEER) against rj.scan: values, gradients, lengths and
reverse in float64; the convergence report is honest; minGRU/minLSTM are exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests.helpers import assert_trees_close, f64

I, T, B = 3, 12, 2
CELLS = {
  "elman": lambda: rj.elman(4),
  "gru": lambda: rj.gru(4),
  "lstm": lambda: rj.lstm(3),
  "mgu (custom cell)": lambda: rj.mgu(4),
  "hmlstm": lambda: rj.hmlstm((3, 2)),
}


def _setup(make, seed=0):
  cell = make()
  params = f64(cell.init(jax.random.key(seed), I))
  xs = jax.random.normal(jax.random.key(seed + 1), (T, B, I), jnp.float64)
  carry = jax.tree.map(
    lambda a: 0.3 * jax.random.normal(jax.random.key(seed + 2), a.shape, a.dtype),
    cell.initial_carry((B,), jnp.float64),
  )
  if isinstance(carry, rj.HMLSTMCarry):  # boundaries are 0 or 1
    carry = carry._replace(z=(jnp.array([[1.0], [0.0]]),))
  return cell, params, xs, carry


@pytest.mark.parametrize(
  ("name", "method"),
  [
    ("elman", "deer"),
    ("gru", "quasi"),
    ("lstm", "deer"),
    ("mgu (custom cell)", "quasi"),
    ("hmlstm", "quasi"),
  ],
)
def test_parallel_equals_scan_with_lengths_and_reverse(name, method):
  cell, params, xs, carry = _setup(CELLS[name])
  lengths = jnp.array([T, 5])
  for reverse in (False, True):
    got_c, got, info = rj.parallel_scan(
      cell, params, xs, carry, method=method, lengths=lengths, reverse=reverse, fallback="none"
    )
    want_c, want = rj.scan(cell, params, xs, carry, lengths=lengths, reverse=reverse)
    assert bool(info.converged) and not bool(info.fell_back), info
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    assert_trees_close(got_c, want_c, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
  ("name", "adjoint"), [("gru", "parallel"), ("mgu (custom cell)", "sequential")]
)
def test_gradients_equal_scans(name, adjoint):
  cell, params, xs, carry = _setup(CELLS[name], seed=3)
  lengths = jnp.array([T, 7])

  def loss(p, x, c, parallel):
    if parallel:
      c, ys, _ = rj.parallel_scan(cell, p, x, c, method="quasi", lengths=lengths, adjoint=adjoint)
    else:
      c, ys = rj.scan(cell, p, x, c, lengths=lengths)
    return jnp.sum(jnp.sin(ys)) + jnp.sum(jax.tree.leaves(c)[0] ** 2)

  grad = jax.grad(loss, argnums=(0, 1, 2))
  assert_trees_close(grad(params, xs, carry, True), grad(params, xs, carry, False), rtol=1e-8)


def test_converged_is_honest_on_a_chaotic_rnn():
  """g = 3 at T = 2000: either not converged, or the cell's own step re-run on the
  returned trajectory reproduces it to the tolerance (never compared with rj.scan:
  under chaos any two trajectories part)."""
  H, tol = 32, 1e-8  # λ₁ ≈ +0.3 here (at H = 8 or 16 the same gain is not chaotic)
  cell = rj.elman(H, recurrent_init=rj.init.gaussian(3.0))
  params = f64(cell.init(jax.random.key(0), 1))
  xs = 0.1 * jax.random.normal(jax.random.key(1), (2000, 1, 1), jnp.float64)
  _, hs, info = rj.parallel_scan(
    cell, params, xs, method="quasi", max_iters=30, tol=tol, fallback="none"
  )
  prev = jnp.concatenate([jnp.zeros((1, 1, H)), hs[:-1]])
  step = jax.vmap(lambda h, x: cell.step(params, h, x)[0])(prev, xs)
  certificate = float(jnp.max(jnp.abs(hs - step)))
  assert bool(info.converged) == (certificate <= tol)
  assert certificate == pytest.approx(float(info.residual), rel=1e-6, abs=1e-300)
  if not bool(info.converged):  # the default falls back, and says so
    _, ys, info2 = rj.parallel_scan(cell, params, xs, method="quasi", max_iters=30, tol=tol)
    assert bool(info2.fell_back)
    np.testing.assert_array_equal(ys, rj.scan(cell, params, xs)[1])


def test_a_nonfinite_iterate_is_repaired_and_a_warm_start_needs_no_iteration():
  """A NaN warm start: the first iterate is NaN, reset (to 0, the last iterate being
  NaN too) and counted; DEER goes on and converges by itself, no fallback."""
  cell, params, xs, carry = _setup(CELLS["gru"])
  nan = jnp.full((T, B, 4), jnp.nan)
  _, ys, info = rj.parallel_scan(cell, params, xs, carry, init=nan)
  assert bool(info.nonfinite) and int(info.repairs) >= 1
  assert bool(info.converged) and not bool(info.fell_back)
  np.testing.assert_allclose(ys, rj.scan(cell, params, xs, carry)[1], rtol=0, atol=1e-10)
  _, hs, _ = rj.parallel_scan(cell, params, xs, carry)
  # a float32 carry with float64 params: the fallback's result keeps the carry's dtype
  _, ys32, info32 = rj.parallel_scan(cell, params, xs, carry.astype(jnp.float32), max_iters=1)
  assert bool(info32.fell_back) and ys32.dtype == jnp.float32
  _, again, info = rj.parallel_scan(cell, params, xs, carry, init=hs)
  assert int(info.iterations) == 0 and bool(info.converged)
  np.testing.assert_array_equal(again, hs)


@pytest.mark.parametrize("make", [lambda: rj.mingru(4), lambda: rj.minlstm(4)])
def test_min_cells_are_exact_in_one_associative_scan(make):
  cell, params, xs, carry = _setup(make)
  _, ys, info = rj.parallel_scan(cell, params, xs, carry)
  assert int(info.iterations) == 0 and bool(info.converged)
  np.testing.assert_allclose(ys, rj.scan(cell, params, xs, carry)[1], rtol=1e-10, atol=1e-12)


def test_deer_repairs_overflow_and_reaches_the_chaotic_trajectory_within_t():
  """g = 3, H = 4, T = 20 from zeros: DEER's early iterates blow past BOUND (clipped,
  counted); it keeps going and meets rj.scan to 1e-10 within T iterations, as the
  ELK paper's theory says (each Newton iteration fixes one more step)."""
  n = 20
  cell = rj.elman(4, recurrent_init=rj.init.gaussian(3.0))
  params = f64(cell.init(jax.random.key(5), 1))
  xs = jax.random.normal(jax.random.key(15), (n, 1, 1), jnp.float64)
  _, ys, info = rj.parallel_scan(cell, params, xs, method="deer", max_iters=n, fallback="none")
  assert int(info.repairs) >= 1 and float(jnp.nanmax(info.residual_history)) > 1e7
  assert bool(info.converged) and int(info.iterations) <= n and not bool(info.fell_back)
  np.testing.assert_allclose(ys, rj.scan(cell, params, xs)[1], rtol=0, atol=1e-10)
  # recurrent weights ×1e30: the first iterate overflows float64 (inf, NaN), which used to
  # end the iteration there; reset to the last iterate, DEER converges within T = 12
  wild = f64(rj.elman(4).init(jax.random.key(0), 1))
  wild = wild._replace(w_h=1e30 * wild.w_h)
  xs = 0.1 * jax.random.normal(jax.random.key(10), (T, 1, 1), jnp.float64)
  _, ys, info = rj.parallel_scan(cell, wild, xs, method="deer", max_iters=T, fallback="none")
  assert bool(info.nonfinite) and int(info.repairs) >= 1
  assert bool(info.converged) and int(info.iterations) <= T
  np.testing.assert_allclose(ys, rj.scan(cell, wild, xs)[1], rtol=0, atol=1e-10)


def test_deer_converges_within_t_in_float32_under_chaos():
  """H = 8, g = 4, T = 60 in float32 (the issue's tanh RNN, driven): the Jacobians'
  products grow like e^{λ₁t}, and before DEER held its converged prefix the rounding
  they amplify swamped the first unconverged step, so it stalled at T iterations
  unconverged. Held, every iteration converges at least one more step: within T, the
  residual, recomputed here in float64 NumPy, is at the tolerance."""
  H, g, n, tol = 8, 4.0, 60, 1e-5
  k = jax.random.split(jax.random.key(0), 4)
  f32 = jnp.float32
  w = g / H**0.5 * jax.random.normal(k[0], (H, H), f32)
  v = jax.random.normal(k[1], (H, H), f32) / H**0.5
  b = 0.1 * jax.random.normal(k[2], (H,), f32)
  xs = jax.random.normal(k[3], (n, 1, H), f32)
  params = rj.ElmanParams(w_x=v.T, w_h=w.T, b=b)
  _, ys, info = rj.parallel_scan(
    rj.elman(H), params, xs, method="deer", tol=tol, max_iters=n, fallback="none"
  )
  assert ys.dtype == jnp.float32 and int(info.repairs) >= 1
  assert bool(info.converged) and int(info.iterations) < n
  y = np.asarray(ys[:, 0], np.float64)
  prev = np.concatenate([np.zeros((1, H)), y[:-1]])
  x = np.asarray(xs[:, 0], np.float64)
  w, v, b = (np.asarray(a, np.float64) for a in (w, v, b))
  step = np.tanh(prev @ w.T + x @ v.T + b)
  assert np.max(np.abs(y - step)) <= tol + 1e-6  # float32's own step differs by rounding


def test_holding_the_exact_prefix_leaves_newton_its_last_quadratic_step():
  """DEER holds only steps exact to rounding (`_hold_tol`), not every step within tol:
  on a g = 2.5 tanh RNN (float64, tol 1e-6) the last Newton step still sharpens the
  whole trajectory far below tol. Holding every step within tol would end at a residual
  near 1e-6 and 1e-5 from rj.scan."""
  H, n, g = 8, 60, 2.5
  k = jax.random.split(jax.random.key(0), 4)
  w = g / H**0.5 * jax.random.normal(k[0], (H, H), jnp.float64)
  v = jax.random.normal(k[1], (H, H), jnp.float64) / H**0.5
  b = 0.1 * jax.random.normal(k[2], (H,), jnp.float64)
  xs = jax.random.normal(k[3], (n, 1, H), jnp.float64)
  params = rj.ElmanParams(w_x=v.T, w_h=w.T, b=b)
  cell = rj.elman(H)
  _, ys, info = rj.parallel_scan(
    cell, params, xs, method="deer", tol=1e-6, max_iters=n, fallback="none"
  )
  assert bool(info.converged) and float(info.residual) < 1e-10
  np.testing.assert_allclose(ys, rj.scan(cell, params, xs)[1], rtol=0, atol=1e-10)


def test_holding_keeps_float32_accuracy_on_a_stable_gru():
  """A float32 GRU (H = 16, T = 300, four sequences converging at their own pace, the
  default tol 1e-5): DEER ends as close to rj.scan as without the hold (4e-7). A step
  is held only after two iterates in a row put it within the rounding band, so each
  gets its last quadratic Newton step; holding it the first time it entered the band
  left the result 8e-6 from rj.scan."""
  cell = rj.gru(16)
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (300, 4, 3), jnp.float32)
  _, ys, info = rj.parallel_scan(cell, params, xs, method="deer", fallback="none")
  assert ys.dtype == jnp.float32 and bool(info.converged)
  assert float(info.residual) < 1e-6
  np.testing.assert_allclose(ys, rj.scan(cell, params, xs)[1], rtol=0, atol=1e-6)


def test_parallel_scan_bad_input():
  cell, params, xs, _ = _setup(CELLS["gru"])
  cases = [
    (dict(method="newton"), ValueError, "method"),
    (dict(fallback="never"), ValueError, "fallback"),
    (dict(adjoint="implicit"), ValueError, "adjoint"),
    (dict(max_iters=0), ValueError, "max_iters"),
    (dict(tol=-1.0), ValueError, "tol must be a positive number"),
  ]
  for kw, error, match in cases:
    with pytest.raises(error, match=match):
      rj.parallel_scan(cell, params, xs, **kw)
  with pytest.raises(ValueError, match=r"rnnjax.parallel_scan"):
    rj.parallel_scan(cell, params, xs[:, :, :2])


def _merit(cell, params, xs, traj):
  """Levenberg–Marquardt's merit, Σ_t ‖s_t − f(s_{t-1}, x_t)‖², by the cell's own step."""
  prev = jnp.concatenate([jnp.zeros_like(traj[:1]), traj[:-1]])
  step = jax.vmap(lambda h, x: cell.step(params, h, x)[0])
  return float(jnp.sum((traj - step(prev, xs)) ** 2))


def test_damping_keeps_chaos_finite_and_diagnose_predicts_it():
  """A chaotic RNN: quasi-DEER's undamped iterates go wild (overflow, repaired);
  quasi-ELK's damped steps (a fixed λ, as the paper) stay bounded; neither claims
  convergence. On a contracting RNN quasi-ELK converges to rj.scan (a smaller λ:
  closer to quasi-DEER's steps). diagnose's prediction follows λ₁."""
  chaotic = rj.elman(32, recurrent_init=rj.init.gaussian(3.0))  # λ₁ ≈ +0.3
  calm = rj.elman(8, recurrent_init=rj.init.gaussian(0.5))
  p_chaos, p_calm = (f64(c.init(jax.random.key(0), 1)) for c in (chaotic, calm))
  xs = 0.1 * jax.random.normal(jax.random.key(1), (400, 1, 1), jnp.float64)
  kw = dict(fallback="none")
  _, _, quasi = rj.parallel_scan(chaotic, p_chaos, xs, method="quasi", max_iters=20, **kw)
  assert not bool(quasi.converged)  # chaos: honestly not
  assert int(quasi.repairs) >= 1  # wild: iterates past BOUND or non-finite, repaired
  _, _, elk = rj.parallel_scan(chaotic, p_chaos, xs, method="quasi-elk", max_iters=20, **kw)
  assert not bool(elk.converged) and not bool(elk.nonfinite) and int(elk.repairs) == 0
  assert float(jnp.max(elk.residual_history)) < 10.0  # bounded: tanh states lie in [-1, 1]
  _, ys, info = rj.parallel_scan(
    calm, p_calm, xs, method="quasi-elk", max_iters=100, damping=0.1, **kw
  )
  assert bool(info.converged)
  want = rj.scan(calm, p_calm, xs)[1]
  np.testing.assert_allclose(ys, want, rtol=0, atol=1e-8)  # the 1e-8
  assert (
    rj.jacobian.diagnose(chaotic, p_chaos, xs[:, 0])["parallel_evaluation"]["prediction"] == "no"
  )
  assert rj.jacobian.diagnose(calm, p_calm, xs[:, 0])["parallel_evaluation"]["prediction"] == "fast"


def test_full_elk_damps_where_newton_overflows_and_converges_where_it_contracts():
  """ELK with full Jacobians (the parallel Kalman smoother's step), one compiled solve
  for two weight scales: where DEER's first Newton step overflows (recurrent weights
  ×6), ELK's iterates stay finite and lower the merit; as initialised (contracting)
  it converges to rj.scan to 1e-8."""
  cell = rj.elman(4)
  params = f64(cell.init(jax.random.key(0), 1))
  wild = params._replace(w_h=6.0 * params.w_h)
  xs = 0.1 * jax.random.normal(jax.random.key(1), (60, 1, 1), jnp.float64)
  elk = jax.jit(
    lambda p: rj.parallel_scan(
      cell, p, xs, method="elk", max_iters=40, fallback="none", damping=1.0
    )  # the cautious start: the default (ELK_DAMPING) is tested below
  )
  _, _, deer = rj.parallel_scan(cell, wild, xs, method="deer", max_iters=3, fallback="none")
  assert int(deer.repairs) >= 1 and not bool(deer.converged)  # its steps blow past BOUND
  assert float(jnp.nanmax(deer.residual_history)) > 1e6
  _, _, info = elk(wild)
  assert not bool(info.nonfinite) and int(info.repairs) == 0 and not bool(info.converged)
  assert float(jnp.nanmax(info.residual_history)) < 1.0
  assert _merit(cell, wild, xs, info.trajectory) < _merit(cell, wild, xs, 0 * info.trajectory)
  carry, ys, info = elk(params)
  want_c, want = rj.scan(cell, params, xs)
  assert bool(info.converged)
  np.testing.assert_allclose(ys, want, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(carry, want_c, rtol=1e-8, atol=1e-10)


def test_diagonals_without_the_jacobians_and_a_grid_shaped_carry():
  """quasi-DEER reads each step's Jacobian diagonal; it
  equals the diagonal of the full Jacobians, also for a carry of shape [B, 2, 2]
  (flattened to S = 4 and back) on a user's cell."""

  def init(key, n_in):
    return {"w": 0.4 * jax.random.normal(key, (n_in + 4, 4), jnp.float64)}

  def step(p, h, x):  # h: [B, 2, 2]
    new = jnp.tanh(jnp.concatenate([x, h.reshape(h.shape[0], 4)], -1) @ p["w"])
    new = new.reshape(h.shape)
    return new, new.reshape(h.shape[0], 4)

  grid = rj.custom_cell(
    init,
    step,
    lambda shape=(), dtype=jnp.float32: jnp.zeros((*shape, 2, 2), dtype),
    name="grid",
    output_size=4,
  )
  params = grid.init(jax.random.key(4), I)
  xs = jax.random.normal(jax.random.key(5), (T, B, I), jnp.float64)
  carry = 0.3 * jax.random.normal(jax.random.key(6), (B, 2, 2), jnp.float64)
  for method in ("deer", "quasi"):
    got_c, got, _ = rj.parallel_scan(grid, params, xs, carry, method=method, fallback="none")
    want_c, want = rj.scan(grid, params, xs, carry)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got_c, want_c, rtol=1e-8, atol=1e-10)
  from rnnjax._src import parallel

  cell, params, xs, _ = _setup(CELLS["lstm"])
  prob = parallel._Problem(cell, jax.tree.structure(cell.initial_carry((B,))), ((3,), (3,)))
  prev = jax.random.normal(jax.random.key(7), (T, B, 6), jnp.float64)
  full = prob.jacobians(params, prev, xs, None)
  np.testing.assert_allclose(
    prob.diagonals(params, prev, xs, None), jnp.diagonal(full, axis1=-2, axis2=-1), rtol=1e-12
  )


def test_diagonals_one_pass_and_loop_agree_with_the_dense_jacobians(monkeypatch):
  """Both ways of reading the Jacobians' diagonals (one pass of jacfwd under vmap; a
  loop of S JVPs, forced by DIAG_ONE_PASS_ELEMENTS = 0) equal the dense Jacobians'
  diagonal in float64, for a built-in GRU and a user's cell (mgu), and quasi-DEER's
  result and iteration count do not depend on which one ran."""
  from rnnjax._src import parallel

  default = parallel.DIAG_ONE_PASS_ELEMENTS
  assert default >= T * B * 4 * 4  # the one pass is the default here
  for name in ("gru", "mgu (custom cell)"):
    cell, params, xs, carry = _setup(CELLS[name])
    prob = parallel._Problem(cell, jax.tree.structure(carry), ((4,),))
    prev = jax.random.normal(jax.random.key(7), (T, B, 4), jnp.float64)
    step = lambda s, x, c=cell, p=params: c.step(p, s[None], x[None])[0][0]  # noqa: E731
    jac = jax.vmap(jax.vmap(jax.jacfwd(step)))
    want = jnp.diagonal(jac(prev, xs), axis1=-2, axis2=-1)  # independent of _Problem
    runs = {}
    for budget in (default, 0):
      monkeypatch.setattr(parallel, "DIAG_ONE_PASS_ELEMENTS", budget)
      np.testing.assert_allclose(prob.diagonals(params, prev, xs, None), want, rtol=1e-12)
      runs[budget] = rj.parallel_scan(cell, params, xs, carry, method="quasi", fallback="none")
    (_, ys_one, info_one), (_, ys_loop, info_loop) = runs.values()
    assert bool(info_one.converged) and int(info_one.iterations) == int(info_loop.iterations)
    np.testing.assert_allclose(ys_one, ys_loop, rtol=0, atol=1e-12)


def test_warm_start_from_the_trajectory_of_a_two_part_carry():
  """info.trajectory is every step's carry (the LSTM's h and c); passed back as init,
  the solve starts converged; a wrongly shaped init is refused with the fix."""
  cell, params, xs, carry = _setup(CELLS["lstm"])
  _, ys, info = rj.parallel_scan(cell, params, xs, carry)
  c, loop = carry, []  # the trajectory is every step's carry: a Python loop of the step
  for t in range(T):
    c, _ = cell.step(params, c, xs[t])
    loop.append(c)
  assert_trees_close(info.trajectory, jax.tree.map(lambda *a: jnp.stack(a), *loop), rtol=1e-8)
  _, again, warm = rj.parallel_scan(cell, params, xs, carry, init=info.trajectory)
  assert int(warm.iterations) == 0 and bool(warm.converged)
  np.testing.assert_array_equal(again, ys)
  with pytest.raises(ValueError, match=r"must be \(12, 2, 3\).*info.trajectory"):
    rj.parallel_scan(cell, params, xs, carry, init=rj.LSTMCarry(ys[:5], ys[:5]))
  with pytest.raises(ValueError, match="init must be a carry of every step"):
    rj.parallel_scan(cell, params, xs, carry, init=ys)


@pytest.mark.parametrize(("T_", "B_"), [(0, 2), (4, 0)])
def test_empty_inputs_return_what_scan_returns(T_, B_):
  """Issue 20: T = 0 gave an internal vmap size error and B = 0 a ZeroDivisionError."""
  cell, params, _, _ = _setup(CELLS["gru"])
  xs = jnp.ones((T_, B_, I))
  carry = 0.5 + cell.initial_carry((B_,), jnp.float64)
  for kw in ({}, {"lengths": jnp.zeros(B_, jnp.int32), "reverse": True}):
    got_c, got_ys, info = rj.parallel_scan(cell, params, xs, carry, max_iters=7, **kw)
    want = rj.scan(cell, params, xs, carry, **kw)
    assert_trees_close((got_c, got_ys), want, 0, 0)
    assert_trees_close(got_c, carry, 0, 0)  # unchanged
    assert (int(info.iterations), bool(info.converged), bool(info.fell_back)) == (0, True, False)
    assert info.residual_history.shape == (7,) and info.trajectory.shape == (T_, B_, 4)


DIAGONAL_CELLS = {
  "elman tanh": lambda: rj.elman(4),
  "elman relu": lambda: rj.elman(4, "relu"),
  "gru reset before": lambda: rj.gru(4, reset="before"),
  "gru reset after": lambda: rj.gru(4, reset="after"),
  "lstm": lambda: rj.lstm(3),
}


@pytest.mark.parametrize("name", list(DIAGONAL_CELLS))
def test_closed_diagonals_equal_the_jvp_path(name):
  """Each built-in's rj.ClosedDiagonal equals the diagonal the loop of S JVPs reads
  (float64, tiny H) at random states, and is 1 on masked steps (the state kept)."""
  from rnnjax._src import parallel

  cell = DIAGONAL_CELLS[name]()
  assert cell.state_diagonal is not None
  params = f64(cell.init(jax.random.key(0), I))
  params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape), params)
  carry = cell.initial_carry((B,), jnp.float64)
  shapes = tuple(leaf.shape[1:] for leaf in jax.tree.leaves(carry))
  prob = parallel._Problem(cell, jax.tree.structure(carry), shapes)
  S = sum(s[0] for s in shapes)
  prev = 0.7 * jax.random.normal(jax.random.key(2), (T, B, S), jnp.float64)
  xs = jax.random.normal(jax.random.key(3), (T, B, I), jnp.float64)
  mask = jax.random.bernoulli(jax.random.key(4), 0.7, (T, B))

  @jax.jit
  def both(m):
    return tuple(prob.diagonals(params, prev, xs, m, way) for way in ("closed", "loop"))

  for m in (None, mask):
    closed, loop = both(m)
    assert closed.shape == (T, B, S)
    np.testing.assert_allclose(closed, loop, rtol=1e-12)
  np.testing.assert_array_equal(closed[~mask], 1.0)


def test_quasi_with_the_closed_diagonal_reaches_the_trajectory_as_without(monkeypatch):
  """Quasi-DEER with the GRU's and the LSTM's closed-form diagonal runs the same
  iterations to the same trajectory as with the diagonal read off jacfwd, and that
  trajectory is rj.scan's. (Quasi-ELK reads its diagonals by the same call.)"""
  from rnnjax._src import parallel

  for name in ("gru", "lstm"):
    cell, params, xs, carry = _setup(CELLS[name])
    runs = []
    for closed in (True, False):
      monkeypatch.setattr(parallel, "DIAG_CLOSED_FORM", closed)
      runs.append(rj.parallel_scan(cell, params, xs, carry, method="quasi", fallback="none"))
    (_, ys_c, info_c), (_, ys_j, info_j) = runs
    assert bool(info_c.converged) and bool(info_j.converged), name
    assert int(info_c.iterations) == int(info_j.iterations), name
    np.testing.assert_allclose(ys_c, ys_j, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ys_c, rj.scan(cell, params, xs, carry)[1], rtol=1e-8, atol=1e-10)


def test_a_closed_diagonal_of_the_wrong_shape_is_refused():
  """A user's ClosedDiagonal is what quasi-DEER calls; one that returns the full
  Jacobian, or a diagonal of another size, fails at trace time naming both shapes."""
  elman = rj.elman(4)
  params = f64(elman.init(jax.random.key(0), I))
  xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
  for wrong, shown in ((elman.state_jacobian, r"\(4, 4\)"), (lambda p, h, x: h[:3], r"\(3,\)")):
    cell = rj.custom_cell(
      elman.init, elman.step, elman.initial_carry, name="mine", diagonal=rj.ClosedDiagonal(wrong)
    )
    with pytest.raises(ValueError, match=rf"ClosedDiagonal of .*mine.* returned shape {shown}"):
      rj.parallel_scan(cell, params, xs, method="quasi")
  with pytest.raises(ValueError, match=r"needs the diagonal .* shape \(4,\)"):
    rj.parallel_scan(cell, params, xs, method="quasi-elk")
  with pytest.raises(TypeError, match=r"diagonal must be rnnjax.ClosedDiagonal\(fn\)"):
    rj.custom_cell(elman.init, elman.step, elman.initial_carry, diagonal=elman.state_jacobian)


def test_a_call_outside_jit_compiles_once():
  """rj.parallel_scan called as a new user does (no jax.jit): the solve is compiled at
  the first call and reused, so the cell's step is not traced again (it was, at every
  call: ELK's 30 s a call on a small cell). The cache is the same for every method;
  the cheapest one to compile is tried."""
  traces = []

  def step(p, h, x):
    traces.append(1)
    h = jnp.tanh(h @ p["w"] + x @ p["v"])
    return h, h

  def init(key, input_size):
    kw, kv = jax.random.split(key)
    return {"w": 0.5 * jax.random.normal(kw, (3, 3)), "v": jax.random.normal(kv, (input_size, 3))}

  cell = rj.custom_cell(
    init, step, lambda shape=(), dtype=jnp.float32: jnp.zeros((*shape, 3), dtype), name="counted"
  )
  params = cell.init(jax.random.key(0), 2)
  xs = jax.random.normal(jax.random.key(1), (4, 1, 2))
  _, first, _ = rj.parallel_scan(cell, params, xs, method="quasi", fallback="none")
  n = len(traces)
  assert n > 0
  _, again, info = rj.parallel_scan(cell, params, xs, method="quasi", fallback="none")
  assert len(traces) == n
  assert bool(info.converged)
  np.testing.assert_array_equal(first, again)


def test_elk_default_damping_is_the_measured_one_and_converges():
  """ELK starts from `ELK_DAMPING` (1e-2, chosen in benchmarks/parallel_outlook.py) unless
  told otherwise; quasi-ELK keeps 1.0. From it ELK converges on a contracting RNN in fewer
  iterations than from 1.0, to the tolerance's accuracy (errors up to the conditioning
  times tol: 1e-10 per step, a contracting 4-unit RNN over 60 steps)."""
  from rnnjax._src.parallel import ELK_DAMPING

  assert ELK_DAMPING == 1e-2
  cell = rj.elman(4)
  params = f64(cell.init(jax.random.key(0), 1))
  xs = 0.1 * jax.random.normal(jax.random.key(1), (60, 1, 1), jnp.float64)
  kw = dict(method="elk", max_iters=40, fallback="none")
  _, ys, info = rj.parallel_scan(cell, params, xs, **kw)
  _, _, cautious = rj.parallel_scan(cell, params, xs, damping=1.0, **kw)
  assert bool(info.converged) and float(info.residual) <= 1e-10
  assert int(info.iterations) < int(cautious.iterations)
  np.testing.assert_allclose(ys, rj.scan(cell, params, xs)[1], rtol=0, atol=1e-8)
