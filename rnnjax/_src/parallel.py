"""Parallel-in-time evaluation of any cell: DEER, quasi-DEER, ELK (`parallel_scan`).

A recurrence ``s_t = f(s_{t-1}, x_t)`` over T steps is the root of the T equations
``s_t − f(s_{t-1}, x_t) = 0`` (Lim et al. 2024, DEER). Newton's method linearises
them at the current guess ``s^(k)``:

    s_t = J_t s_{t-1} + b_t,     J_t = ∂f/∂s (s^(k)_{t-1}, x_t),
                                 b_t = f(s^(k)_{t-1}, x_t) − J_t s^(k)_{t-1}

and the linear recurrence is solved for all t at once by
``jax.lax.associative_scan`` over the affine maps ``s ↦ J s + b`` (O(log T)
depth, `linear_scan`). With the full Jacobians (``method="deer"``) the
iteration is Newton's and is exact after at most T iterations (each fixes at
least one more step); quasi-DEER (``method="quasi"``, Gonzalez et al. 2024)
keeps only the diagonal of ``J_t``, so each composition is elementwise
(``[T, S]`` instead of ``[T, S, S]``) at the price of more iterations. ELK
(``method="elk"``, the same paper) damps each Newton step towards the current
guess (Levenberg–Marquardt, a trust region): the step is the smoothed mean of a
linear-Gaussian state-space model, computed by a parallel Kalman filter and
smoother (`kalman.lm_smooth`); ``"quasi-elk"`` damps the diagonal step the same
way, a per-unit tridiagonal solve. Damping keeps the iterates finite where the
undamped steps overflow (chaotic cells, long T). The state is the cell's carry
flattened to ``s: [S]``; the Jacobians (or their diagonals) come from JVPs of
the cell's own ``step``, so every cell works, users' custom cells included.

Gradients are exact at the returned trajectory by the implicit function
theorem: with ``λ_T = ∂L/∂s_T``, the adjoint ``λ_t = ∂L/∂s_t + J_{t+1}ᵀ
λ_{t+1}`` is the same kind of linear recurrence, backwards, solved by the same
associative scan with the exact Jacobians; the params and input gradients are
then one VJP of ``f`` over all T steps.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnnjax._src import arguments, kalman, linear_scan, state
from rnnjax._src import scan as scan_mod
from rnnjax._src.cells import minrnn
from rnnjax._src.cells.base import Cell
from rnnjax._src.typing import Array, Carry, Params

METHODS = ("deer", "quasi", "elk", "quasi-elk")
ELK_DAMPING = 1e-2
"""ELK's default initial λ, chosen from ``benchmarks/results/parallel_outlook_cpu.md``: the
fewest iterations summed over driven tanh RNNs at g = 0.5–1.5, T = 100 and 300 (41, against
84 from 1.0 and 64 from 1e-6, the ELK paper's, which is as fast at g <= 1 but needs 20 at
g = 1.5 where 1e-2 needs 7–8)."""
LAMBDA_MAX = 1e8
"""ELK's largest damping: past it a refused step is as good as no step."""
BOUND = 1e8
"""The largest magnitude an undamped iterate keeps (the square root of the dtype's
largest number where that is smaller): past it an entry is clipped to it (see
`_repair`)."""
DIAG_ONE_PASS_ELEMENTS = 1 << 24
"""Quasi-DEER and quasi-ELK take the Jacobians' diagonals ``[T, B, S]`` in one pass
(the full ``[T, B, S, S]`` formed for the moment) up to this many elements
``T·B·S²`` (64 MiB in float32), by a loop of S JVPs past it
(`_Problem.diagonals`); 0 always loops."""
DIAG_CLOSED_FORM = True
"""Quasi-DEER and quasi-ELK use a cell's `rnnjax.ClosedDiagonal` when it declares
one (False: never, as a benchmark's baseline)."""
FALLBACKS = ("sequential", "none")
ADJOINTS = ("parallel", "sequential")


class ParallelInfo(NamedTuple):
  """What `parallel_scan` reports besides the result.

  Attributes:
    iterations: ``[]`` int, the Newton iterations run.
    converged: ``[]`` bool, the parallel trajectory meets ``tol``: every
      ``|s_t − f(s_{t-1}, x_t)| <= tol`` with the cell's own step re-run on it.
    residual: ``[]``, that largest ``|s_t − f(s_{t-1}, x_t)|`` over t, the
      batch and the state, of the last parallel iterate.
    residual_history: ``[max_iters]``, the residual after each iteration
      (NaN past the last one).
    nonfinite: ``[]`` bool, an iterate held a NaN or an infinity on the
      way. DEER, quasi-DEER and quasi-ELK repair it and go on (see
      ``repairs``); ELK refuses such a step like any step that does not lower
      its merit, raises λ and goes on, so it never sets this.
    fell_back: ``[]`` bool, the result is `rnnjax.scan`'s, because the
      iteration did not converge and ``fallback="sequential"``.
    trajectory: the carry after every step, leaves ``[T, B, ...]``, in
      processing order (sequences flipped when ``reverse``): the last parallel
      iterate, the trajectory itself when converged. Pass it (under
      ``jax.lax.stop_gradient``) as the next call's ``init`` to warm-start it.
    repairs: ``[]`` int, the iterations whose iterate was repaired: an entry
      that was NaN or infinite reset to the previous iterate's, or one past
      `BOUND` clipped to it (0 for ELK, which refuses such steps instead).
  """

  iterations: Array
  converged: Array
  residual: Array
  residual_history: Array
  nonfinite: Array
  fell_back: Array
  trajectory: Carry
  repairs: Array


def _flat(carry: Carry, shapes: tuple[tuple[int, ...], ...]) -> Array:
  """The carry as one ``[..., S]`` array: each leaf's trailing ``shape`` (its shape
  past the batch, e.g. ``(H,)`` or a ConvLSTM's ``(h, w, C)``) flattened and
  the leaves concatenated."""
  return state.flatten(carry, shapes)


def _check_init(init: Carry, carry: Carry, T: int, what: str) -> None:
  """A warm start is a carry with a leading time axis: leaves ``[T, B, ...]``."""
  got: Any = jax.tree.structure(init)  # (PyTreeDef's stub lacks __eq__)
  want = jax.tree.structure(carry)
  if got != want:
    raise ValueError(
      f"{what}: init must be a carry of every step (the tree of the carry, "
      f"{want}, with leaves [T, B, ...]), got the tree {got}; pass the previous "
      "call's info.trajectory"
    )
  for a, c in zip(jax.tree.leaves(init), jax.tree.leaves(carry), strict=True):
    if tuple(a.shape) != (T, *c.shape):
      raise ValueError(
        f"{what}: init leaf has shape {tuple(a.shape)} but the carry leaf is "
        f"{tuple(c.shape)} and T = {T}, so it must be {(T, *c.shape)} (the carry "
        "after every step); pass the previous call's info.trajectory"
      )


class _Problem(NamedTuple):
  """The recurrence on flat states, one step: ``f(params, s_prev [B, S], x [B, I], m [B])``.

  Hashable (the cell, the carry's tree structure and each leaf's shape past the
  batch), so it can be a static argument of the custom VJP."""

  cell: Cell
  tree: Any
  shapes: tuple[tuple[int, ...], ...]

  def flat(self, carry: Carry) -> Array:
    return _flat(carry, self.shapes)

  def unflat(self, s: Array) -> Carry:
    return state.unflatten(s, self.tree, self.shapes)

  def f(self, params: Params, s: Array, x: Array, m: Array | None) -> Array:
    new, _ = self.cell.step(params, self.unflat(s), x)
    new_s = self.flat(new).astype(s.dtype)
    return new_s if m is None else jnp.where(m[:, None], new_s, s)

  def f_all(self, params: Params, prev: Array, xs: Array, mask: Array | None) -> Array:
    """``f`` at every step at once: ``prev, -> [T, B, S]``."""
    if mask is None:
      return jax.vmap(lambda s, x: self.f(params, s, x, None))(prev, xs)
    return jax.vmap(lambda s, x, m: self.f(params, s, x, m))(prev, xs, mask)

  def jacobians(self, params: Params, prev: Array, xs: Array, mask: Array | None) -> Array:
    """``∂f/∂s_prev`` at every (t, b): ``[T, B, S, S]``, by ``jax.jacfwd`` of one row
    under one ``vmap`` over all ``T·B`` rows (faster than two nested ``vmap`` over t and
    b: a quasi-DEER solve with these diagonals about 1.3× at H = 16, T = 1000 on CPU)."""
    T, B, S = prev.shape

    def one(s: Array, x: Array, m: Array | None) -> Array:  # s: [S], x: [I], m: []
      m1 = None if m is None else m[None]
      return jax.jacfwd(lambda v: self.f(params, v[None], x[None], m1)[0])(s)

    rows = (prev.reshape(T * B, S), xs.reshape(T * B, *xs.shape[2:]))
    m = None if mask is None else mask.reshape(T * B)
    jac = jax.vmap(one, in_axes=(0, 0, None if mask is None else 0))(*rows, m)
    return jac.reshape(T, B, S, S)

  def closed_diagonals(self, params: Params, prev: Array, xs: Array, mask: Array | None) -> Array:
    """The diagonals from the cell's `rnnjax.ClosedDiagonal`, ``[T, B, S]``: its
    ``fn(params, carry, x) -> [S]`` under ``vmap`` over t and b (1 on masked steps,
    where ``f`` keeps the state)."""
    fn = self.cell.state_diagonal
    assert fn is not None
    S = prev.shape[-1]

    def one(s: Array, x: Array) -> Array:  # s: [S], x: [I]
      d = fn(params, self.unflat(s), x)
      shape = getattr(d, "shape", None)
      if shape != (S,):
        raise ValueError(
          f"rnnjax.parallel_scan: the ClosedDiagonal of {self.cell!r} returned "
          f"{'shape ' + str(tuple(shape)) if shape is not None else type(d).__name__} "
          f"for one example (carry leaves {list(self.shapes)}, x {tuple(x.shape)}), "
          f"but quasi-DEER needs the diagonal of ∂s_t/∂s_(t-1) over the flattened carry: "
          f"shape ({S},) (S = the carry's sizes summed); fn(params, carry, x) sees one "
          f"example, unbatched"
        )
      return d.astype(s.dtype)

    d = jax.vmap(jax.vmap(one))(prev, xs)  # [T, B, S]
    return d if mask is None else jnp.where(mask[..., None], d, jnp.ones((), d.dtype))

  def diagonal_way(self, shape: tuple[int, ...]) -> str:
    """How `diagonals` reads the diagonals of ``prev: shape = [T, B, S]``: ``"closed"``,
    ``"one pass"`` or ``"loop"`` (a static choice, made from the module's settings
    when `parallel_scan` is called, so it is part of the compiled solve's key)."""
    if self.cell.state_diagonal is not None and DIAG_CLOSED_FORM:
      return "closed"
    return "one pass" if math.prod(shape) * shape[-1] <= DIAG_ONE_PASS_ELEMENTS else "loop"

  def diagonals(
    self, params: Params, prev: Array, xs: Array, mask: Array | None, way: str | None = None
  ) -> Array:
    """The diagonals of the same Jacobians, ``[T, B, S]``.

    Three ways (``way``; default `diagonal_way`), the same numbers: the cell's
    closed form when it declares one (``"closed"``: `rnnjax.ClosedDiagonal`,
    `closed_diagonals`; measured against the one pass on the same tanh RNN as
    ``rj.elman`` against a hint-free ``rj.custom_cell``,
    ``benchmarks/results/parallel_references_cpu.md``), else

    - one pass (when ``T·B·S² <= DIAG_ONE_PASS_ELEMENTS``): `jacobians` (``jax.jacfwd``
      of each step under ``vmap``: the basis tangents are the same at every step, so
      e.g. ``e_j @ W`` is formed once) and their diagonal. Measured no slower at
      every size tried (T = 1000, B = 1, CPU: a quasi-DEER solve about 1.1× faster
      at S = 8, 2-4× at S = 16 and 32, 9× at S = 64;
      ``benchmarks/results/parallel_quasi_cpu.md``), but it holds ``[T, B, S, S]``
      for the moment;
    - otherwise S JVPs in a loop: ``f`` is linearised once over all steps
      (``jax.linearize``), the one-hot tangent ``e_j`` pushed through the linear map
      and unit j of the result kept, ``(J_t e_j)_j = (J_t)_jj``: memory ``[T, B, S]``.
    """
    way = self.diagonal_way(prev.shape) if way is None else way
    if way == "closed":
      return self.closed_diagonals(params, prev, xs, mask)
    S = prev.shape[-1]
    if way == "one pass":
      return jnp.diagonal(self.jacobians(params, prev, xs, mask), axis1=-2, axis2=-1)
    _, jvp = jax.linearize(lambda s: self.f_all(params, s, xs, mask), prev)

    def unit(j: Array, diag: Array) -> Array:
      e = jnp.broadcast_to(jax.nn.one_hot(j, S, dtype=prev.dtype), prev.shape)
      column = jvp(e)  # J_t e_j: [T, B, S]
      return lax.dynamic_update_index_in_dim(
        diag, lax.dynamic_index_in_dim(column, j, -1, keepdims=True), j, -1
      )

    return lax.fori_loop(0, S, unit, jnp.zeros_like(prev))


def _shifted(s0: Array, traj: Array) -> Array:
  """``[s_0, s_1, ..., s_{T-1}]`` from ``traj = [s_1, ..., s_T]``."""
  return jnp.concatenate([s0[None], traj[:-1]], axis=0)


def _damped_solve(a: Array, b: Array, s0: Array, guess: Array, lam: Array) -> Array:
  """The Levenberg–Marquardt step of quasi-ELK: per state unit, the minimiser of

      Σ_t (s_t − a_t s_{t-1} − b_t)²  +  λ Σ_t (s_t − o_t)²      (o = ``guess``, s_0 fixed)

  which is the smoothed mean of a scalar linear-Gaussian state-space model (the
  ELK paper's Kalman smoother); its normal equations are tridiagonal in t,
  solved by ``jax.lax.linalg.tridiagonal_solve``. ``λ → 0`` gives quasi-DEER's
  step; a large ``λ`` stays near ``o``. Arrays ``[T, B, S]``, ``s0: [B, S]``.
  """
  a_next = jnp.concatenate([a[1:], jnp.zeros_like(a[:1])], axis=0)  # a_{t+1}, 0 at T
  b_next = jnp.concatenate([b[1:], jnp.zeros_like(b[:1])], axis=0)
  diag = 1.0 + a_next * a_next + lam
  lower = jnp.concatenate([jnp.zeros_like(a[:1]), -a[1:]], axis=0)  # s_{t-1}'s coefficient
  upper = -a_next  # s_{t+1}'s coefficient
  rhs = b - a_next * b_next + lam * guess
  rhs = rhs.at[0].add(a[0] * s0)

  def last(x: Array) -> Array:  # [T, B, S] -> [B, S, T]
    return jnp.moveaxis(x, 0, -1)

  out = lax.linalg.tridiagonal_solve(last(lower), last(diag), last(upper), last(rhs)[..., None])
  return jnp.moveaxis(out[..., 0], -1, 0)


class _Options(NamedTuple):
  """The solver's static settings (hashable: a static argument of the custom VJP)."""

  method: str
  max_iters: int
  tol: float
  damping: float
  adjoint: str
  diagonal: str | None = None  # quasi's: `_Problem.diagonal_way`


HOLD_ULPS = 64
"""`_hold_band`'s rounding allowance, in units of the dtype's epsilon times the size
of the state (at least 1): a step solved from an exact state carries the rounding of
``J s − J s`` and of ``f``, a few dozen ulps for the cells here."""


def _hold_band(r: Array, fx: Array, tol: float) -> Array:
  """Each sequence's prefix ``[T, B]`` of steps exact to rounding: every residual
  ``|s − f| = r`` up to t within ``min(tol, max(tol², HOLD_ULPS·ε·max(1, |f|)))``
  (``r``, ``fx``: ``[T, B, S]``; a NaN residual is outside). Newton holds a step once
  two iterates in a row put it in this band (`_hold`), so every step gets one more
  Newton step after it first enters it: holding at ``tol`` itself would freeze steps
  that step would still sharpen quadratically (to about tol²), and results would
  end near ``tol`` instead of far below it."""
  eps = float(jnp.finfo(r.dtype).eps)
  allowance = HOLD_ULPS * eps * jnp.maximum(1.0, jnp.abs(fx))
  limit = jnp.minimum(tol, jnp.maximum(tol * tol, allowance))
  bad = ~jnp.all(r <= limit, axis=-1)  # [T, B]
  T = bad.shape[0]
  first_bad = jnp.where(jnp.any(bad, axis=0), jnp.argmax(bad, axis=0), T)
  return jnp.arange(T)[:, None] < first_bad[None]


def _hold(done: Array, traj: Array, a: Array, b: Array) -> tuple[Array, Array]:
  """The linear recurrence ``s_t = a_t s_{t-1} + b_t`` made to keep each sequence's
  exact prefix (``done: [T, B]``, see `_hold_band`) where it is: ``a_t = 0``,
  ``b_t`` the current iterate there. Newton's step would move those steps by
  rounding only, but the scan forms products of the Jacobians from t = 1, and on
  chaotic dynamics those grow like e^{λ₁t}: in float32 that rounding, so amplified,
  swamped the first unconverged step and DEER stalled short of the trajectory
  (g = 3, T = 500). Held, the first unheld step is solved from an exact state, so
  each iteration makes at least one more step exact (the ELK paper's T-iteration
  bound holds in floating point, one iteration later) and the products start there.

  ``a`` is ``[T, B, S]`` (diagonals) or ``[T, B, S, S]`` (full Jacobians); ``b``
  and ``traj`` are ``[T, B, S]``.
  """
  keep = done.reshape(done.shape + (1,) * (a.ndim - 2))
  return jnp.where(keep, jnp.zeros((), a.dtype), a), jnp.where(done[..., None], traj, b)


def _repair(new: Array, last: Array) -> tuple[Array, Array, Array]:
  """An undamped iterate made usable: each NaN or infinite entry reset to the last
  iterate's (0 where that is not finite either, a non-finite warm start), then every
  entry clipped to ``±BOUND`` (``±sqrt(max)`` of a dtype whose largest number is
  smaller). Newton's iterate k is exact on steps 1..k whatever it holds later, and
  an overflow arises only past that exact prefix (its linearised dynamics explode
  there), so the repair never touches the exact prefix and DEER still reaches the
  trajectory within T iterations, as the ELK paper proves (the references clip at
  1e8 and zero NaNs; the last finite value is the better guess where the
  linearisation, not the state, blew up).

  Returns:
    ``(repaired, was_nonfinite, was_repaired)``: the iterate and two ``[]`` bools.
  """
  bound = min(BOUND, math.sqrt(float(jnp.finfo(new.dtype).max)))
  finite = jnp.isfinite(new)
  zero = jnp.zeros((), new.dtype)
  out = jnp.where(finite, new, jnp.where(jnp.isfinite(last), last, zero))
  out = jnp.clip(out, -bound, bound)
  # both flags from one reduction (each is a pass over [T, B, S] inside the Newton
  # loop): the largest |entry|, a non-finite one counted as infinite
  worst = jnp.max(jnp.where(finite, jnp.abs(new), jnp.asarray(jnp.inf, new.dtype)))
  return out, worst == jnp.inf, worst > bound


def _newton(
  prob: _Problem,
  opts: _Options,
  params: Params,
  xs: Array,
  s0: Array,
  mask: Array | None,
  guess: Array,
) -> tuple[Array, Any]:
  """Iterate the linearised solve from ``guess`` until the residual meets ``tol``.

  DEER, quasi-DEER and quasi-ELK take every step, repaired where it overflowed
  (`_repair`: non-finite entries reset to the last iterate's, huge ones clipped),
  and go on to ``max_iters``: with DEER's exact Jacobians each iteration fixes at
  least one more step, so a budget of T reaches the trajectory even where the
  linearised dynamics overflow on the way (chaotic cells). DEER and quasi-DEER hold
  each sequence's exact prefix fixed (`_hold`), which keeps that bound in floating
  point.

  ELK is Levenberg–Marquardt on the merit ``Σ_t ‖s_t − f(s_{t-1}, x_t)‖²``: its
  linearisation is the Gauss–Newton model of that sum, so a step that lowers it is
  taken and λ halves, one that does not is refused and λ doubles (up to
  `LAMBDA_MAX`). (The largest residual, which ``tol`` bounds, is not a merit
  function: a small step along the LM direction can raise it, and accepting on it
  stalls.) Quasi-ELK's diagonal model is not a model of the merit, so no λ makes
  its step a descent step; it keeps λ fixed and takes every step, as the paper
  does.

  Returns:
    ``(traj, (iterations, converged, residual, history, nonfinite, repairs))``.
  """
  method = opts.method

  holds = method in ("deer", "quasi")

  def residual(traj: Array) -> tuple[Array, Array, Array, Array]:
    """The largest residual, the merit (ELK's only; 0 otherwise), ``f`` at every
    step of ``traj``, which the next iteration's linearisation reuses (one
    evaluation of f per iteration), and the exact prefix ``[T, B]`` (`_hold_band`;
    all False for the methods that hold nothing)."""
    fx = prob.f_all(params, _shifted(s0, traj), xs, mask)
    r = jnp.abs(traj - fx)
    merit = jnp.sum(r * r) if method == "elk" else jnp.zeros((), r.dtype)
    band = _hold_band(r, fx, opts.tol) if holds else jnp.zeros(r.shape[:2], bool)
    return jnp.max(r), merit, fx, band

  def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
    k, traj, fx, res, merit, band, done, hist, bad, lam, repairs = state
    prev = _shifted(s0, traj)  # fx = f(prev, xs), from the last residual
    if method in ("deer", "elk"):  # s_t = J_t s_{t-1} + b_t, J_t: [T, B, S, S]
      jac = prob.jacobians(params, prev, xs, mask)
      b = fx - (jac @ prev[..., None])[..., 0]
      if method == "deer":
        new = linear_scan.solve(*_hold(done, traj, jac, b), s0, diag=False)
      else:
        new = kalman.lm_smooth(jac, b, s0, traj, lam)
    else:  # the diagonals only: [T, B, S]
      a = prob.diagonals(params, prev, xs, mask, opts.diagonal)
      b = fx - a * prev
      if method == "quasi":
        new = linear_scan.solve(*_hold(done, traj, a, b), s0, diag=True)
      else:
        new = _damped_solve(a, b, s0, traj, lam)
    if method == "elk":  # Levenberg–Marquardt: take the step only if it helps; adapt λ
      new_res, new_merit, new_fx, _ = residual(new)
      finite = jnp.all(jnp.isfinite(new)) & jnp.isfinite(new_merit)
      better = finite & ~(new_merit > merit)
      lam = jnp.where(better, lam / 2, jnp.minimum(lam * 2, LAMBDA_MAX))
      traj = jnp.where(better, new, traj)
      fx = jnp.where(better, new_fx, fx)
      res = jnp.where(better, new_res, res)
      merit = jnp.where(better, new_merit, merit)
    else:  # quasi-ELK (a fixed λ, as the paper) and the undamped methods: every step
      traj, nonfinite, repaired = _repair(new, traj)
      last_band = band
      res, merit, fx, band = residual(traj)
      done = last_band & band  # exact in two iterates in a row: held from now on
      bad = bad | nonfinite
      repairs = repairs + repaired.astype(repairs.dtype)
    hist = hist.at[k].set(res)
    return k + 1, traj, fx, res, merit, band, done, hist, bad, lam, repairs

  def cond(state: tuple[Any, ...]) -> Array:
    k, _, _, res, *_ = state
    return (k < opts.max_iters) & ~(res <= opts.tol)  # a NaN residual keeps iterating

  res0, merit0, fx0, band0 = residual(guess)
  hist0 = jnp.full((opts.max_iters,), jnp.nan, res0.dtype)
  lam0 = jnp.asarray(opts.damping, res0.dtype)
  zero = jnp.asarray(0)
  done0 = jnp.zeros_like(band0)  # nothing held before the first iteration
  state0 = (zero, guess, fx0, res0, merit0, band0, done0, hist0, jnp.asarray(False), lam0, zero)
  k, traj, _, res, *_, hist, bad, _, repairs = lax.while_loop(cond, body, state0)
  finite = jnp.all(jnp.isfinite(traj))
  bad = bad | ~finite
  return traj, (k, (res <= opts.tol) & finite, res, hist, bad, repairs)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _implicit(
  prob: _Problem,
  opts: _Options,
  params: Params,
  xs: Array,
  s0: Array,
  mask: Array | None,
  guess: Array,
) -> tuple[Array, Any]:
  return _newton(prob, opts, params, xs, s0, mask, guess)


def _implicit_fwd(
  prob: _Problem,
  opts: _Options,
  params: Params,
  xs: Array,
  s0: Array,
  mask: Array | None,
  guess: Array,
) -> tuple[tuple[Array, Any], Any]:
  traj, stats = _newton(prob, opts, params, xs, s0, mask, guess)
  return (traj, stats), (params, xs, s0, mask, traj)


def _adjoint_sequential(
  prob: _Problem, params: Params, prev: Array, xs: Array, mask: Array | None, dtraj: Array
) -> Array:
  """``λ_t = g_t + J_{t+1}ᵀ λ_{t+1}`` by a reverse ``lax.scan`` of per-step VJPs:
  T sequential steps, ``[T, B, S]`` memory (no Jacobian is formed)."""

  def back(mu: Array, step: tuple[Any, ...]) -> tuple[Array, Array]:
    s, x, m, g = step  # mu = J_{t+1}ᵀ λ_{t+1}
    lam = g + mu  # λ_t
    _, vjp = jax.vjp(lambda v: prob.f(params, v, x, m), s)
    return vjp(lam)[0], lam  # J_tᵀ λ_t feeds step t - 1

  steps = (prev, xs, mask, dtraj)
  _, lam = lax.scan(back, jnp.zeros_like(dtraj[0]), steps, reverse=True)
  return lam


def _implicit_bwd(prob: _Problem, opts: _Options, res: Any, g: Any) -> tuple[Any, ...]:
  """The adjoint at the fixed point: ``λ_t = g_t + J_{t+1}ᵀ λ_{t+1}``, by a reverse
  associative scan with the exact Jacobians (``adjoint="parallel"``) or a reverse
  scan of VJPs (``"sequential"``), then one VJP of ``f`` over all steps."""
  params, xs, s0, mask, traj = res
  dtraj, _ = g
  prev = _shifted(s0, traj)
  if opts.adjoint == "parallel":
    jac = prob.jacobians(params, prev, xs, mask)  # exact, whatever the forward's method
    jac_t = jnp.swapaxes(jac, -1, -2)
    # λ_t = g_t + J_{t+1}ᵀ λ_{t+1}: coefficients shifted by one, the last one zero
    coeff = jnp.concatenate([jac_t[1:], jnp.zeros_like(jac_t[:1])], axis=0)
    lam = linear_scan.solve(coeff, dtraj, jnp.zeros_like(s0), diag=False, reverse=True)
  else:
    lam = _adjoint_sequential(prob, params, prev, xs, mask, dtraj)
  _, vjp = jax.vjp(lambda p, sp, x: prob.f_all(p, sp, x, mask), params, prev, xs)
  dparams, dprev, dxs = vjp(lam)
  ds0 = dprev[0]  # s_0 feeds step 1 only
  zeros_guess = jnp.zeros_like(traj)
  return dparams, dxs, ds0, None, zeros_guess


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


def parallel_scan(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  *,
  method: str = "deer",
  lengths: Array | None = None,
  reverse: bool = False,
  max_iters: int | None = None,
  tol: float | None = None,
  init: Carry | None = None,
  fallback: str = "sequential",
  damping: float | None = None,
  adjoint: str = "parallel",
) -> tuple[Carry, Array, ParallelInfo]:
  """Evaluate ``cell`` over ``xs`` in parallel over time (DEER, quasi-DEER, ELK).

  The result is `rnnjax.scan`'s (the same ``lengths`` and ``reverse``
  semantics, time-major ``[T, B, I]``), found by Newton iterations whose
  linear solves are associative scans (see the module docstring).

  Args:
    cell: any `rnnjax.Cell`.
    params: its params.
    xs: ``[T, B, I]``.
    carry: the initial carry for batch B (default zeros).
    method: ``"deer"`` (full Jacobians ``[T, B, S, S]``: Newton, at most T
      iterations), ``"quasi"`` (their diagonals ``[T, B, S]``: less work per
      iteration, more iterations), ``"elk"`` (the DEER step damped by
      Levenberg–Marquardt: a parallel Kalman smoother over ``[T, B, S, S]``,
      for trajectories where the undamped steps overflow) or ``"quasi-elk"``
      (the quasi step damped the same way: a per-unit tridiagonal solve).
      Each step's Jacobian comes from S JVPs of the cell's ``step``: DEER and
      ELK form it (``jax.jacfwd``); ``quasi`` and ``quasi-elk`` keep only its
      diagonal, ``[T, B, S]``, read in one pass from the formed Jacobians while
      ``T·B·S²`` is at most `DIAG_ONE_PASS_ELEMENTS` (faster), past it from a
      loop of S JVPs that never holds ``[T, B, S, S]``.
    lengths: ``[B]`` valid lengths, as in `rnnjax.scan` (the same rule: the
      padding is masked before the cell; concrete lengths outside ``[0, T]``
      raise, traced ones are clipped).
    reverse: process each sequence backwards inside its length.
    max_iters: the iteration budget (default 100; DEER is exact after T, even
      where its iterates overflow on the way: DEER, quasi-DEER and quasi-ELK
      reset a NaN or infinite entry to the last iterate's and clip one past
      `BOUND`, then go on, counted in ``info.repairs``; DEER and quasi-DEER
      hold the steps already exact to rounding, so that rounding amplified by
      chaotic Jacobians cannot undo them and the bound holds in float32 too).
    tol: the largest ``|s_t − f(s_{t-1}, x_t)|`` accepted (default 1e-5 in
      float32 and 1e-10 in float64).
    init: a warm start, the carries of every step ``[T, B, ...]`` in
      processing order (as ``info.trajectory`` holds them: pass the previous
      call's, the ParaRNN trick); default zeros.
    fallback: ``"sequential"`` (default): when the iteration does not converge
      (within ``max_iters``), return `rnnjax.scan`'s result instead,
      and say so in ``info.fell_back``, so a result is never silently wrong;
      ``"none"``: return the last finite iterate with ``info.converged`` False.
    damping: the Levenberg–Marquardt λ: ``"quasi-elk"`` keeps it (larger:
      smaller, safer steps; towards 0: quasi-DEER's; default 1.0); ``"elk"``
      starts from it (default `ELK_DAMPING`, 1e-2, the fastest initial λ measured
      over tanh RNNs at g = 0.5–1.5), halving it after a step that lowers the sum
      of squared residuals and doubling it after one that does not (refused).
    adjoint: how the gradient's adjoint recurrence ``λ_t = g_t + J_{t+1}ᵀ
      λ_{t+1}`` is solved: ``"parallel"`` (default: a reverse associative scan
      with the exact Jacobians, ``[T, B, S, S]`` memory, O(log T) depth) or
      ``"sequential"`` (a reverse scan of per-step VJPs: ``[T, B, S]`` memory,
      T steps, for long sequences where the Jacobians do not fit).

  The solve is compiled once per cell, shapes, dtypes and settings and kept, so
  calls outside ``jax.jit`` reuse it (a cell built anew at each call, e.g. a
  `rnnjax.custom_cell` of new functions, compiles anew: build it once).

  `rnnjax.mingru` and `rnnjax.minlstm` (without ``lengths``) are linear in
  their state with coefficients of ``x_t`` alone, so they are evaluated
  exactly by one associative scan in log space, with no iterations
  (``info.iterations`` is 0).

  Returns:
    ``(carry, ys, info)``: the carry after each sequence's last valid step,
    ``ys: [T, B, O]`` (zero on padding) and a `ParallelInfo`. Gradients of
    ``carry`` and ``ys`` with respect to ``params``, ``xs`` and ``carry`` are
    those of the fixed point (implicit function theorem, with the exact
    Jacobians, by either ``adjoint``): exact when the iteration converged (and
    `rnnjax.scan`'s own when it fell back); with ``fallback="none"`` and no
    convergence they treat the last iterate as if it were the fixed point.

    Empty inputs (``T = 0`` or ``B = 0``) give `rnnjax.scan`'s result (the
    initial carry, unchanged, and empty ``ys``) with ``info.iterations`` 0,
    ``info.converged`` True and an empty trajectory ``[T, B, ...]``.

  Raises:
    TypeError: inputs `rnnjax.scan` would refuse by dtype.
    ValueError: an unknown ``method`` or ``fallback``, a ``max_iters`` that is
      not a positive int, a ``tol`` that is not positive, or inputs
      (``xs``, ``params``, ``carry``, ``lengths``) `rnnjax.scan` would refuse.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.gru(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> xs = jax.random.normal(jax.random.key(1), (200, 2, 3))
    >>> carry, ys, info = rj.parallel_scan(cell, params, xs)
    >>> bool(info.converged), int(info.iterations) < 20
    (True, True)
    >>> bool(jnp.allclose(ys, rj.scan(cell, params, xs)[1], atol=1e-5))
    True
  """
  what = "rnnjax.parallel_scan"
  arguments.choice("method", method, METHODS, what)
  arguments.choice("fallback", fallback, FALLBACKS, what)
  arguments.choice("adjoint", adjoint, ADJOINTS, what)
  if max_iters is not None:
    arguments.positive_int("max_iters", max_iters, what)
  if tol is not None and not (isinstance(tol, (int, float, np.floating)) and tol > 0):
    raise ValueError(f"{what}: tol must be a positive number, got {tol!r}")
  if damping is None:
    damping = ELK_DAMPING if method == "elk" else 1.0
  if not (isinstance(damping, (int, float, np.floating)) and damping > 0):
    raise ValueError(f"{what}: damping must be a positive number, got {damping!r}")
  xs = scan_mod.check_inputs(cell, params, xs, True, what)
  T, B = xs.shape[0], xs.shape[1]
  scan_mod.check_params(cell, params, xs.shape[-1], what)
  if carry is None:
    carry = cell.initial_carry((B,), jnp.result_type(xs, *jax.tree.leaves(params)))
  else:
    scan_mod.check_carry(cell, params, xs, carry, B, what)
  mask = None
  if lengths is not None:
    lengths = arguments.lengths(lengths, T, B, what)
    mask = jnp.arange(T)[:, None] < lengths[None, :]  # [T, B]
    xs = scan_mod.mask_padding(xs, mask)
  if T == 0 or B == 0:
    return _empty(cell, params, xs, carry, lengths, max_iters)
  leaves, tree = jax.tree.flatten(carry)
  prob = _Problem(cell, tree, tuple(tuple(int(n) for n in leaf.shape[1:]) for leaf in leaves))
  dtype = jax.eval_shape(prob.flat, carry).dtype  # (shapes only: nothing runs here)
  s0_size = sum(math.prod(shape) for shape in prob.shapes)
  max_iters = 100 if max_iters is None else max_iters
  if tol is None:
    tol = 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5
  if init is None:
    guess = None
  else:
    _check_init(init, carry, T, what)
    guess = prob.flat(init).astype(dtype)
  way = prob.diagonal_way((T, B, s0_size)) if method.startswith("quasi") else None
  opts = _Options(method, max_iters, float(tol), float(damping), adjoint, way)
  return _solve(prob, opts, fallback, reverse, params, xs, carry, lengths, mask, guess)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _solve(
  prob: _Problem,
  opts: _Options,
  fallback: str,
  reverse: bool,
  params: Params,
  xs: Array,
  carry: Carry,
  lengths: Array | None,
  mask: Array | None,
  guess: Array | None,
) -> tuple[Carry, Array, ParallelInfo]:
  """`parallel_scan` past its checks, compiled once per cell, shapes and options
  (all static and hashable): a call outside ``jax.jit`` runs the compiled solve
  instead of tracing and compiling the Newton loop again (its closures are new
  objects at every call, so ``lax.while_loop`` alone would recompile each time)."""
  cell = prob.cell
  T = xs.shape[0]
  if reverse:
    xs = scan_mod._flip(xs, lengths)
  s0 = prob.flat(carry)
  dtype = s0.dtype
  if guess is None:
    guess = jnp.zeros((T, *s0.shape), dtype)
  if cell.name in minrnn.LINEAR and mask is None:
    # h_t = a_t ⊙ h_{t-1} + b_t with a_t, b_t of x_t alone: exact by one associative
    # scan in log space (Feng et al. 2024), no iterations
    traj = minrnn.parallel_trajectory(cell, params, xs, s0)
    res = jnp.max(jnp.abs(traj - prob.f_all(params, _shifted(s0, traj), xs, None)))
    k, bad = jnp.asarray(0), ~jnp.all(jnp.isfinite(traj))
    converged = (res <= opts.tol) & ~bad
    hist = jnp.full((opts.max_iters,), jnp.nan, res.dtype)
    repairs = jnp.asarray(0)
  else:
    stats = _implicit(prob, opts, params, xs, s0, mask, guess)
    traj, (k, converged, res, hist, bad, repairs) = stats

  def outputs(traj: Array) -> tuple[Carry, Array]:
    prev = _shifted(s0, traj)

    def one(s: Array, x: Array) -> Array | None:
      new, y = cell.step(params, prob.unflat(s), x)
      return None if y is jax.tree.leaves(new)[0] else y  # None: y is the state's h

    ys = jax.vmap(one)(prev, xs)
    if ys is None:  # read y off the returned trajectory itself
      ys = jax.tree.leaves(prob.unflat(traj))[0]
    if mask is not None:
      ys = jnp.where(mask[..., None], ys, jnp.zeros((), ys.dtype))
    return prob.unflat(traj[-1]), ys

  par_carry, par_ys = outputs(traj)
  if fallback == "sequential":

    def sequential() -> tuple[Carry, Array]:
      out = scan_mod.scan(cell, params, xs, carry, lengths=lengths)
      # rj.scan promotes to the params' dtype; the parallel result keeps the carry's
      return jax.tree.map(lambda a, b: a.astype(b.dtype), out, (par_carry, par_ys))

    fell_back = ~converged
    seq_carry, seq_ys = lax.cond(converged, lambda: (par_carry, par_ys), sequential)
    out_carry, ys = seq_carry, seq_ys
  else:
    fell_back = jnp.asarray(False)
    out_carry, ys = par_carry, par_ys
  if reverse:
    ys = scan_mod._flip(ys, lengths)
  info = ParallelInfo(k, converged, res, hist, bad, fell_back, prob.unflat(traj), repairs)
  return out_carry, ys, info


def _empty(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry,
  lengths: Array | None,
  max_iters: int | None,
) -> tuple[Carry, Array, ParallelInfo]:
  """``T = 0`` or ``B = 0``: `rnnjax.scan`'s result (the initial carry, empty
  outputs) in the carry's dtype, with nothing to iterate: converged after 0
  iterations at residual 0, and an empty trajectory ``[T, B, ...]``."""
  T = xs.shape[0]
  out_carry, ys = scan_mod.scan(cell, params, xs, carry, lengths=lengths)
  out_carry = jax.tree.map(lambda a, c: a.astype(c.dtype), out_carry, carry)
  dtype = jnp.result_type(*jax.tree.leaves(carry))
  traj = jax.tree.map(lambda c: jnp.zeros((T, *c.shape), c.dtype), carry)
  n = 100 if max_iters is None else max_iters
  info = ParallelInfo(
    jnp.asarray(0),
    jnp.asarray(True),
    jnp.zeros((), dtype),
    jnp.full((n,), jnp.nan, dtype),
    jnp.asarray(False),
    jnp.asarray(False),
    traj,
    jnp.asarray(0),
  )
  return out_carry, ys, info
