"""The implementation of `rnnjax.jacobian`, whose module docstring documents it.

Jacobian tools: why gradients explode or vanish, measured.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnnjax._src import arguments, host, state
from rnnjax._src import scan as scan_mod
from rnnjax._src.activations import Activation
from rnnjax._src.cells import base
from rnnjax._src.cells.base import Cell
from rnnjax._src.typing import Array, Carry, Params

__all__ = [
  "PascanuConditions",
  "diagnose",
  "flatten_state",
  "gradient_norms_vs_lag",
  "isometry",
  "lecture_bound",
  "log_product_norms",
  "log_singular_values",
  "lyapunov_spectrum",
  "max_lyapunov_perturbation",
  "norms",
  "parallel_outlook",
  "parallel_prediction",
  "pascanu_conditions",
  "product_norm_power",
  "step_jacobians",
  "trajectory",
  "unflatten_state",
  "window_spectra",
]

SIGMA_RTOL = 1e-5
"""Relative tolerance of the comparison ``σ_max(W)`` against ``1/γ``: an
orthogonal matrix has ``σ_max = 1.0000002`` in float32, which is 1."""


# ----------------------------------------------------------------- states


def flatten_state(cell: Cell, carry: Carry) -> Array:
  """The carry as one vector ``s`` of size ``cell.state_size``.

  Args:
    cell: the cell the carry belongs to.
    carry: a carry with leaves ``[..., H]``.

  Returns:
    ``s: [..., S]``, the leaves concatenated in order (``[h; c]`` for the
    LSTM).
  """
  return state.flatten(carry)


def unflatten_state(cell: Cell, s: Array, like: Carry) -> Carry:
  """Inverse of `flatten_state`, shaped like the carry ``like``.

  Args:
    cell: the cell the carry belongs to.
    s: ``[..., S]``, a flattened state.
    like: a carry of the wanted structure (its values are not read).

  Returns:
    A carry of the structure of ``like``.
  """
  return state.unflatten(s, like)


def _check(
  cell: Cell, params: Params, xs: Any, carry: Carry | None, what: str
) -> tuple[Array, Carry]:
  """The tools' shared checks, at trace time: ``xs`` one floating sequence
  ``[T, I]`` with ``T >= 1``, ``params`` that fit ``cell`` at input size I (as
  `rnnjax.scan` checks them), and an unbatched ``carry`` (default zeros)."""
  if not isinstance(cell, Cell):
    raise TypeError(f"{what}: cell must be an rnnjax Cell, got {type(cell).__name__}")
  xs = jnp.asarray(xs)
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    raise TypeError(
      f"{what}: xs must be floating point, got dtype {xs.dtype} (xs.shape="
      f"{tuple(xs.shape)}); token ids go through rj.embedding first, other data "
      f"through xs.astype(jnp.float32)"
    )
  if xs.ndim != 2:
    raise ValueError(
      f"{what}: xs must be one sequence [T, I], got shape {tuple(xs.shape)}; "
      f"use jax.vmap over the batch axis (in_axes=1)"
    )
  input_size = base.input_size(cell, params, what)  # declared by the cell, or None
  if input_size is not None and xs.shape[-1] != input_size:
    raise ValueError(
      f"{what}: xs has feature size {xs.shape[-1]} but params expect input_size {input_size}"
    )
  if xs.shape[0] < 1:
    raise ValueError(f"{what}: xs has no steps (T=0)")
  scan_mod.check_params(cell, params, xs.shape[-1], what)
  want = jax.eval_shape(lambda: cell.initial_carry((), _dtype(xs, params)))
  if carry is None:
    return xs, cell.initial_carry((), _dtype(xs, params))
  got_struct: Any = jax.tree.structure(carry)
  want_struct: Any = jax.tree.structure(want)
  if got_struct != want_struct:
    raise ValueError(
      f"{what}: carry has structure {got_struct} but {cell!r} expects {want_struct}; "
      f"pass cell.initial_carry(()) (one sequence, unbatched) or None for zeros"
    )
  for got, w in zip(jax.tree.leaves(carry), jax.tree.leaves(want), strict=True):
    if tuple(jnp.shape(got)) != tuple(w.shape):
      raise ValueError(
        f"{what}: carry leaf has shape {tuple(jnp.shape(got))} but one unbatched "
        f"sequence of {cell!r} needs {tuple(w.shape)}; the Jacobian tools take one "
        f"sequence: pass carry[b] (each leaf's row b) for sequence b, or jax.vmap "
        f"the tool over the batch"
      )
  return xs, carry


def _dtype(xs: Array, params: Params) -> Any:
  """The dtype the tools compute in: the result type of the inputs and params."""
  return jnp.result_type(xs, *jax.tree.leaves(params))


def _jacfwd_state_jacobian(cell: Cell) -> Callable[[Params, Carry, Array], Array]:
  """``∂s_t/∂s_{t-1}`` by ``jax.jacfwd`` of ``cell.step`` over the flattened
  carry: the measured Jacobian, for cells that give no closed form."""

  def state_jacobian(params: Params, carry: Carry, x: Array) -> Array:
    def flat_step(s: Array) -> Array:
      new, _ = cell.step(params, unflatten_state(cell, s, carry), x)
      return flatten_state(cell, new)

    return jax.jacfwd(flat_step)(flatten_state(cell, carry))

  return state_jacobian


def _state_jacobian(cell: Cell) -> Callable[[Params, Carry, Array], Array]:
  """The cell's closed-form step Jacobian, or the measured one when it declares none."""
  return cell.state_jacobian or _jacfwd_state_jacobian(cell)


@partial(jax.jit, static_argnums=0)
def trajectory(
  cell: Cell, params: Params, xs: Array, carry: Carry | None = None
) -> tuple[Carry, Carry]:
  """The carries along one sequence.

  Args:
    cell: the cell (static under ``jit``).
    params: its params.
    xs: one sequence ``[T, I]``.
    carry: the initial carry, unbatched (default zeros).

  Returns:
    ``(prevs, final)``: the carry before each step (leaves ``[T, H]``) and the
    carry after the last step (leaves ``[H]``).
  """
  xs, carry = _check(cell, params, xs, carry, "rnnjax.jacobian.trajectory")

  def body(c: Carry, x: Array) -> tuple[Carry, Carry]:
    new, _ = cell.step(params, c, x)
    return new, c

  final, prevs = lax.scan(body, carry, xs)
  return prevs, final


# ----------------------------------------------------------------- step Jacobians


@partial(jax.jit, static_argnums=0, static_argnames="method")
def step_jacobians(
  cell: Cell, params: Params, xs: Array, carry: Carry | None = None, *, method: str = "closed"
) -> Array:
  """``J_t = ∂s_t/∂s_{t-1}`` for every step: ``[T, S, S]``.

  ``method="closed"`` uses the cell's closed form (elman:
  ``diag(f'(z_t)) W``, with ``W = w_hᵀ``), or ``jax.jacfwd`` when the cell
  declares none (``state_jacobian=None``); ``"jacfwd"`` always differentiates
  ``cell.step``. Tests hold them equal.

  Args:
    cell: the cell (static under ``jit``).
    params: its params.
    xs: one sequence ``[T, I]``.
    carry: the initial carry, unbatched (default zeros).
    method: ``"closed"`` or ``"jacfwd"``.

  Returns:
    ``[T, S, S]``: entry ``t`` is the Jacobian of step ``t + 1`` over the
    flattened state (`flatten_state`).

  Raises:
    TypeError: ``cell`` is not a `rnnjax.Cell`, or ``xs`` is not floating point.
    ValueError: ``method`` is unknown, ``xs`` is not one sequence ``[T, I]``
      with the params' input size, ``params`` do not fit the cell, or
      ``carry`` is not one unbatched carry of the cell.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.lstm(3)
    >>> params = cell.init(jax.random.key(0), 2)
    >>> xs = jax.random.normal(jax.random.key(1), (6, 2))
    >>> Js = rj.jacobian.step_jacobians(cell, params, xs)
    >>> Js.shape                                       # [T, S, S] with S = 2H
    (6, 6, 6)
    >>> Jf = rj.jacobian.step_jacobians(cell, params, xs, method="jacfwd")
    >>> bool(jnp.allclose(Js, Jf, atol=1e-5))
    True
  """
  if method not in ("closed", "jacfwd"):
    raise ValueError(f"step_jacobians: unknown method {method!r}; expected 'closed' or 'jacfwd'")
  xs, carry = _check(cell, params, xs, carry, "rnnjax.jacobian.step_jacobians")
  prevs, _ = trajectory(cell, params, xs, carry)
  rule = _state_jacobian(cell) if method == "closed" else _jacfwd_state_jacobian(cell)
  return jax.vmap(lambda c, x: rule(params, c, x))(prevs, xs)


@host.lapack_single_threaded  # OpenBLAS on one thread while it runs
@jax.jit
def norms(Js: Array) -> dict[str, Array]:
  """Per-step spectral (largest singular value) and Frobenius norms.

      ‖J_t‖₂ = σ₁(J_t),   ‖J_t‖_F = (Σ_ij J_t[i, j]²)^½

  One jitted batched ``svd(compute_uv=False)`` (LAPACK ``gesdd`` without the
  singular vectors) and one reduction; `tests/test_jacobian.py` holds both to
  ``numpy.linalg.norm``.

  Args:
    Js: ``[..., S, S]``, e.g. ``[T, S, S]`` from `step_jacobians`.

  Returns:
    ``{"spectral": [...], "frobenius": [...]}``.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj
    >>> n = rj.jacobian.norms(jnp.stack([jnp.diag(jnp.array([3.0, 4.0]))] * 2))
    >>> n["spectral"].tolist(), n["frobenius"].tolist()
    ([4.0, 4.0], [5.0, 5.0])
  """
  sv = jnp.linalg.svd(Js, compute_uv=False)  # [..., S], descending
  return dict(spectral=sv[..., 0], frobenius=jnp.sqrt(jnp.sum(Js * Js, axis=(-2, -1))))


def _activation(cell: Cell, what: str) -> Activation:
  if cell.activation is None:
    raise ValueError(
      f"{what}: the lecture's bound ‖diag f'‖·‖W‖ is for the vanilla RNN, whose step "
      f"Jacobian is diag(f'(z)) W; {cell!r} declares no activation (cell.activation is "
      f"None: its step is not h_t = f(x_t w_x + h_(t-1) w_h + b), as for gated, "
      f"antisymmetric, orthogonal or custom cells), so use step_jacobians and norms, or "
      f"diagnose, which measure the Jacobians instead"
    )
  return cell.activation


def lecture_bound(cell: Cell, params: Params, xs: Array, carry: Carry | None = None) -> Array:
  """The lecture's bound ``‖diag f'(z_t)‖₂ · ‖W‖₂`` per step, for the vanilla RNN.

  Needs a cell that declares its activation (`rnnjax.elman`).

  Args:
    cell: the cell.
    params: its params.
    xs: one sequence ``[T, I]``.
    carry: the initial carry (default zeros).

  Returns:
    ``[T]``, an upper bound of ``‖∂h_t/∂h_{t-1}‖₂`` at every step.

  Raises:
    ValueError: the cell declares no activation (``cell.activation`` is None:
      its step is not the vanilla ``f(x w_x + h w_h + b)``, e.g. a gated cell).
  """
  act = _activation(cell, "rnnjax.jacobian.lecture_bound")
  xs, carry = _check(cell, params, xs, carry, "rnnjax.jacobian.lecture_bound")
  prevs, final = trajectory(cell, params, xs, carry)
  hs = jnp.concatenate([prevs[1:], final[None]])  # h_t, t = 1..T
  fprime = act.grad_from_output(hs)  # f'(z_t) from h_t
  W = base.recurrent_weight(cell, params, "rnnjax.jacobian.lecture_bound")
  return jnp.max(jnp.abs(fprime), axis=-1) * jnp.linalg.norm(W, ord=2)


class PascanuConditions(NamedTuple):
  """Pascanu, Mikolov & Bengio (2013), Sec. 3.1, for ``J = diag(f'(z)) W``.

  Attributes:
    sigma_max: the largest singular value of ``W``.
    gamma: ``γ``, the cell's declared bound on ``|f'|``.
    threshold: ``1/γ``.
    vanishing_sufficient: ``σ_max < 1/γ`` (beyond ``SIGMA_RTOL``): gradients
      vanish for any inputs.
    exploding_necessary: ``σ_max > 1/γ`` (beyond ``SIGMA_RTOL``): explosion is
      possible, not guaranteed.
  """

  sigma_max: float
  gamma: float
  threshold: float
  vanishing_sufficient: bool
  exploding_necessary: bool


def pascanu_conditions(cell: Cell, params: Params) -> PascanuConditions:
  """Pascanu et al. (2013)'s conditions from the cell's declared ``γ`` and ``W``.

  ``σ_max`` equal to ``1/γ`` within ``SIGMA_RTOL`` (an orthogonal ``W`` with
  tanh) is neither: the step norms are then at most 1, and whether gradients
  vanish depends on the inputs.

  Args:
    cell: a cell that declares its activation (`rnnjax.elman`).
    params: its params.

  Returns:
    `PascanuConditions`.

  Raises:
    ValueError: the cell declares no activation (``cell.activation`` is None:
      its step is not the vanilla ``f(x w_x + h w_h + b)``, e.g. a gated cell).

  Examples:
    An orthogonal ``W`` with tanh sits on the threshold, neither condition:

    >>> import jax, rnnjax as rj
    >>> cell = rj.elman(4)
    >>> c = rj.jacobian.pascanu_conditions(cell, cell.init(jax.random.key(0), 2))
    >>> round(c.sigma_max, 4), c.vanishing_sufficient, c.exploding_necessary
    (1.0, False, False)
  """
  act = _activation(cell, "rnnjax.jacobian.pascanu_conditions")
  W = base.recurrent_weight(cell, params, "rnnjax.jacobian.pascanu_conditions")
  sigma = float(jnp.linalg.norm(W, ord=2))
  threshold = 1 / act.gamma
  return PascanuConditions(
    sigma,
    act.gamma,
    threshold,
    sigma < threshold * (1 - SIGMA_RTOL),
    sigma > threshold * (1 + SIGMA_RTOL),
  )


# ----------------------------------------------------------------- gradients by lag


@partial(jax.jit, static_argnums=0)
def gradient_norms_vs_lag(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  dL_dsT: Array | None = None,
) -> Array:
  """``‖∂L_T/∂s_k‖₂`` for every k = 0..T in one reverse pass: ``[T + 1]``.

  ``L_T`` is a loss on the last state only, with ``∂L_T/∂s_T = dL_dsT``
  (default: the all-ones vector over ``h``, divided by √H). Entry ``k`` is at
  lag ``T − k``; entry ``T`` is ``‖dL_dsT‖``. Each norm is taken as
  ``m ‖g/m‖`` with ``m = max |g|``, so it is nonzero for as long as any entry
  of the gradient is (squaring float32 entries would flush norms below 1e-19
  to zero).

  Args:
    cell: the cell (static under ``jit``).
    params: its params.
    xs: one sequence ``[T, I]``.
    carry: the initial carry, unbatched (default zeros).
    dL_dsT: ``[S]``, the gradient of the loss at the last state.

  Returns:
    ``[T + 1]``, the gradient norms by state index ``k``.
  """
  xs, carry = _check(cell, params, xs, carry, "rnnjax.jacobian.gradient_norms_vs_lag")
  S = cell.state_size
  dtype = _dtype(xs, params)
  if dL_dsT is None:
    H = int(jnp.size(jax.tree.leaves(carry)[0]))  # h, the carry's first leaf (not O)
    dL_dsT = jnp.concatenate([jnp.ones(H), jnp.zeros(S - H)]).astype(dtype) / math.sqrt(H)

  def run(eps: Array) -> Array:  # s_t + eps_t: ∂L/∂eps_t = ∂L/∂s_t
    def body(c: Carry, inp: tuple[Array, Array]) -> tuple[Carry, None]:
      x, e = inp
      new, _ = cell.step(params, c, x)
      return unflatten_state(cell, flatten_state(cell, new) + e, carry), None

    c0 = unflatten_state(cell, flatten_state(cell, carry) + eps[0], carry)
    final, _ = lax.scan(body, c0, (xs, eps[1:]))
    return jnp.vdot(dL_dsT, flatten_state(cell, final))

  grads = jax.grad(run)(jnp.zeros((xs.shape[0] + 1, S), dtype))  # [T + 1, S]
  # ‖g‖ = m ‖g / m‖ with m = max |g|: squaring the entries directly would flush
  # norms below √(smallest normal) (1e-19 in float32) to zero long before g does.
  m = jnp.max(jnp.abs(grads), axis=-1)
  return m * jnp.linalg.norm(grads / jnp.where(m > 0, m, 1.0)[:, None], axis=-1)


@host.lapack_single_threaded  # OpenBLAS on one thread while it runs
@jax.jit
def log_product_norms(Js: Array) -> Array:
  """``log ‖J_T J_{T-1} ⋯ J_{k+1}‖₂`` for k = T−1 .. 0, i.e. lags 1..T: ``[T]``.

  Accumulated right to left with a running normalisation, so no product ever
  overflows or underflows; entry ``lag − 1`` is for that lag.

  Args:
    Js: ``[T, S, S]``, the step Jacobians in time order.

  Returns:
    ``[T]``, the log spectral norms by lag.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj
    >>> Js = jnp.stack([0.5 * jnp.eye(2)] * 3)
    >>> [round(float(v), 4) for v in rj.jacobian.log_product_norms(Js)]  # lag·log(1/2)
    [-0.6931, -1.3863, -2.0794]
  """
  S = Js.shape[-1]

  def body(carry: tuple[Array, Array], J: Array) -> tuple[tuple[Array, Array], Array]:
    P, logscale = carry
    P = P @ J  # J_T ⋯ J_{k+1}
    s = jnp.linalg.norm(P)
    s = jnp.where(s > 0, s, 1.0)
    P = P / s
    logscale = logscale + jnp.log(s)
    return (P, logscale), logscale + jnp.log(jnp.linalg.norm(P, ord=2))

  _, out = lax.scan(body, (jnp.eye(S, dtype=Js.dtype), jnp.zeros((), Js.dtype)), Js[::-1])
  return out


@partial(jax.jit, static_argnums=0, static_argnames=("start", "iters"))
def product_norm_power(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  *,
  start: int = 0,
  iters: int = 50,
  key: Array | None = None,
) -> Array:
  """``log ‖J_T ⋯ J_{start+1}‖₂`` without forming any S×S matrix.

  Power iteration on ``PᵀP`` with one JVP (``P v``) and one VJP (``Pᵀ u``)
  per iteration.

  Args:
    cell: the cell (static under ``jit``).
    params: its params.
    xs: one sequence ``[T, I]``.
    carry: the initial carry, unbatched (default zeros).
    start: the product starts after step ``start`` (static).
    iters: power iterations (static).
    key: PRNG key of the starting vector (default ``jax.random.key(0)``).

  Returns:
    A scalar, the log of the product's spectral norm.
  """
  xs, carry = _check(cell, params, xs, carry, "rnnjax.jacobian.product_norm_power")
  prevs, _ = trajectory(cell, params, xs, carry)
  c_start = jax.tree.map(lambda a: a[start], prevs)

  def flow(s: Array) -> Array:  # s_start -> s_T along the trajectory
    def body(c: Carry, x: Array) -> tuple[Carry, None]:
      return cell.step(params, c, x)[0], None

    final, _ = lax.scan(body, unflatten_state(cell, s, carry), xs[start:])
    return flatten_state(cell, final)

  s0 = flatten_state(cell, c_start)
  _, vjp = jax.vjp(flow, s0)
  key = jax.random.key(0) if key is None else key
  v = jax.random.normal(key, s0.shape, s0.dtype)
  v = v / jnp.linalg.norm(v)

  def it(v: Array, _: None) -> tuple[Array, Array]:
    u = jax.jvp(flow, (s0,), (v,))[1]  # P v
    w = vjp(u)[0]  # Pᵀ P v
    n = jnp.linalg.norm(w)
    return w / n, n

  v, ns = lax.scan(it, v, None, length=iters)
  return 0.5 * jnp.log(ns[-1])  # ‖P‖² = λ_max(PᵀP)


# ----------------------------------------------------------------- spectra


@host.lapack_single_threaded  # OpenBLAS on one thread while it runs
@jax.jit
def log_singular_values(Js: Array) -> Array:
  """Log singular values of the product ``J_T ⋯ J_1``, descending.

  The product is carried with a running scalar normalisation, so it never
  overflows.

  Args:
    Js: ``[T, S, S]``, the step Jacobians in time order.

  Returns:
    ``[S]``, descending.
  """
  S = Js.shape[-1]

  def body(carry: tuple[Array, Array], J: Array) -> tuple[tuple[Array, Array], None]:
    P, logscale = carry
    P = J @ P
    s = jnp.linalg.norm(P)
    s = jnp.where(s > 0, s, 1.0)
    return (P / s, logscale + jnp.log(s)), None

  (P, logscale), _ = lax.scan(body, (jnp.eye(S, dtype=Js.dtype), jnp.zeros((), Js.dtype)), Js)
  return logscale + jnp.log(jnp.linalg.svd(P, compute_uv=False))


@host.lapack_single_threaded  # OpenBLAS on one thread while it runs
def window_spectra(Js: Array, window: int) -> Array:
  """Log singular values of the products over consecutive windows.

  Args:
    Js: ``[T, S, S]``, the step Jacobians in time order.
    window: steps per window, in ``[1, T]``; a trailing part shorter than a
      window is left out.

  Returns:
    ``[T // window, S]``, each row descending.

  Raises:
    ValueError: ``window`` lies outside ``[1, T]``.
  """
  T, S, _ = Js.shape
  if not 1 <= window <= T:
    raise ValueError(f"window_spectra: window must lie in [1, T={T}], got {window}")
  n = T // window
  return jax.vmap(log_singular_values)(Js[: n * window].reshape(n, window, S, S))


def isometry(log_sv: Array) -> dict[str, Array]:
  """Dynamical isometry metrics of a product from its log singular values.

  A product is isometric when all its singular values are 1: mean 1 and
  variance 0 of their squares (Pennington et al. 2017).

  Args:
    log_sv: ``[S]``, e.g. from `log_singular_values`.

  Returns:
    ``{"mean_sq": scalar, "var_sq": scalar}``.
  """
  sq = jnp.exp(2 * log_sv)
  return dict(mean_sq=jnp.mean(sq), var_sq=jnp.var(sq))


QR_METHODS = ("auto", "cholesky", "householder")
"""The orthonormalisations `lyapunov_spectrum` offers (its ``qr=``); ``"auto"``
is ``"cholesky"`` in float64 and ``"householder"`` in lower precision."""

CHOLESKY_ORTHOGONALITY_TOL = 1e-2
"""The certificate of a Cholesky QR step: ``Q̂ = Z R̂⁻¹`` is kept when
``‖Q̂ᵀQ̂ − I‖_F`` is at most this (then ``κ(Q̂) < 1.01``), else the step is
redone by Householder. The loss of orthogonality is about ``u κ(Z)²`` (``u``
the unit roundoff), so in float64 steps with ``κ(Z)`` up to about 10⁶ pass."""


def _householder_qr(Z: Array) -> tuple[Array, Array]:
  """``Z = QR`` by Householder reflections (LAPACK ``geqrf`` + ``orgqr``).

  Args:
    Z: ``[S, k]``.

  Returns:
    ``(Q, log |diag R|)``: ``Q: [S, k]`` orthonormal with its columns' signs
    flipped so that ``diag R > 0`` (the basis moves continuously), and ``[k]``.
  """
  Q, R = jnp.linalg.qr(Z)
  d = jnp.diag(R)
  Q = Q * jnp.where(d < 0, -1.0, 1.0).astype(Q.dtype)[None]  # keep Q continuous
  return Q, jnp.log(jnp.abs(d))


def _cholesky_qr_rows(Zt: Array) -> tuple[Array, Array, Array]:
  """``Z = Q̂ R̂`` from the Cholesky factor of the Gram matrix, on the rows
  ``Zt = Zᵀ``, with its certificate.

      G = ZᵀZ = L Lᵀ     (Cholesky; R̂ = Lᵀ, diag R̂ > 0)
      Q̂ᵀ = L⁻¹ Zᵀ        (triangular solve, i.e. Q̂ = Z R̂⁻¹)
      ok ⇔ ‖Q̂ᵀQ̂ − I‖_F ≤ CHOLESKY_ORTHOGONALITY_TOL

  Three matrix products, a Cholesky factorisation of ``[k, k]`` and a
  triangular solve, against Householder's ``geqrf`` + ``orgqr``, whose panel
  factorisations run at matrix-vector speed (``benchmarks/bench_jacobian.py``
  times both). It works on rows because XLA's CPU matmul is fastest as
  ``A Bᵀ`` (both operands contiguous along the contraction). ``Q̂`` loses
  orthogonality like ``u κ(Z)²`` while the residual ``Z − Q̂ R̂`` stays
  ``O(u ‖Z‖)`` (Yamamoto et al. 2015), so a certified step is as good a
  factorisation as Householder's. A Gram matrix that is not numerically
  positive definite (``κ(Z) ≳ u^{-1/2}``) gives a NaN Cholesky factor, which
  fails the certificate.

  Args:
    Zt: ``[k, S]``, the transpose of the matrix to factor.

  Returns:
    ``(Q̂ᵀ, log diag R̂, ok)``: ``[k, S]``, ``[k]`` and a boolean scalar.

  References:
    Yamamoto, Nakatsukasa, Yanagisawa & Fukaya (2015), Roundoff error analysis
    of the CholeskyQR2 algorithm, ETNA 44.
  """
  k = Zt.shape[0]
  G = Zt @ Zt.T  # [k, k], the Gram matrix ZᵀZ
  L = lax.linalg.cholesky(G, symmetrize_input=False)  # G = L Lᵀ; NaN if not PD
  Qt = lax.linalg.triangular_solve(L, Zt, left_side=True, lower=True)  # L⁻¹ Zᵀ: [k, S]
  E = Qt @ Qt.T - jnp.eye(k, dtype=Qt.dtype)  # [k, k], the loss of orthogonality
  ok = jnp.sqrt(jnp.sum(E * E)) <= CHOLESKY_ORTHOGONALITY_TOL  # False for NaN
  return Qt, jnp.log(jnp.diag(L)), ok


def _householder_qr_rows(Zt: Array) -> tuple[Array, Array]:
  """`_householder_qr` of ``Zᵀ = Zt``, returning ``(Qᵀ, log |diag R|)``."""
  Q, logd = _householder_qr(Zt.T)
  return Q.T, logd


@host.lapack_single_threaded  # OpenBLAS on one thread while it runs
@partial(jax.jit, static_argnums=(0, 4), static_argnames=("k", "transient", "qr_every", "qr"))
def lyapunov_spectrum(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  k: int | None = None,
  *,
  transient: int = 0,
  qr_every: int = 1,
  qr: str = "auto",
  key: Array | None = None,
) -> Array:
  """The ``k`` leading Lyapunov exponents (per step, natural log).

  By the QR (Benettin) method inside ``lax.scan``:

      Q_0 random orthonormal [S, k];   J_t Q_{t-1} = Q_t R_t;
      λ_i = (1 / (T − transient)) Σ_{t > transient} log |R_t[i, i]|

  ``qr="householder"`` factors ``Z_t = J_t Q_{t-1}`` by Householder
  reflections (the reference). ``qr="cholesky"`` factors it from the Cholesky
  factor of the Gram matrix ``Z_tᵀZ_t`` (`_cholesky_qr_rows`), which is mostly
  matrix products and the faster for ``k`` in the hundreds; a step whose
  basis fails the certificate ``‖Q̂ᵀQ̂ − I‖_F ≤ CHOLESKY_ORTHOGONALITY_TOL``
  (``κ(Z_t)`` beyond about 10⁶ in float64, a few hundred in float32) is
  redone by Householder. The two give the same exponents up to rounding (to
  1e-8 in float64, tested). With a nearly orthonormal basis ``Q̂_t = Q_t S_t``
  (``S_t`` upper triangular, ``I + O(‖Q̂ᵀQ̂ − I‖)``), the exact factor of
  ``J_t Q_{t-1}`` is ``S_t R̂_t S_{t-1}⁻¹``, so

      Σ_t log R_t[i, i] = Σ_t log R̂_t[i, i] + log S_T[i, i] − log S_a[i, i]

  telescopes; the bases at the ends (after the last step, and after the last
  step of the transient, ``a``) come from Householder, so ``S = I`` there.
  That is why one Cholesky pass per step suffices where CholeskyQR2 takes
  two: the second pass's ``R₂`` would only move a factor ``S_t`` from one
  step's sum to the next's. For a cell that declares its activation
  (`rnnjax.elman`), the Cholesky route forms ``J_t Q = diag(f'(z_t)) W Q``
  without the ``[S, S]`` Jacobian.

  Args:
    cell: the cell (static under ``jit``).
    params: its params.
    xs: the driving inputs ``[T, I]`` (zeros for an autonomous system).
    carry: the initial carry, unbatched (default zeros).
    k: how many exponents (default all, S).
    transient: steps run first and discarded (the state settles onto its
      attractor; the basis aligns).
    qr_every: re-orthonormalise every ``m`` steps instead of every step
      (Benettin et al. 1980): ``Z ← J_t Z`` in between, ``Z = QR`` every m-th
      step, which divides the QR cost by m. The columns of ``Z`` then spread
      by up to ``exp(m (λ₁ − λ_k))``: keep ``m (λ₁ − λ_k)`` well below the log
      of the float's range (about 35 in float64, 15 in float32) for
      Householder, or the small exponents lose their accuracy; the Cholesky
      route needs it below about 16 in float64 (half the log of ``1/u``),
      beyond which its blocks fail the certificate and are redone by
      Householder.
    qr: ``"cholesky"``, ``"householder"`` (the reference), or ``"auto"``
      (default): Cholesky in float64, Householder in lower precision, where
      the Cholesky route's limit ``κ(Z_t) ≲ 400`` lies below the condition
      number of typical steps (``κ(J_t)`` is about ``2S`` for a Gaussian
      ``W``), so that most steps would be factored twice.
    key: PRNG key of ``Q_0`` (default ``jax.random.key(0)``).

  Returns:
    ``[k]``, the exponents in descending order.

  Raises:
    TypeError: ``xs`` is not floating point (as in `rnnjax.scan`).
    ValueError: ``k`` lies outside ``[1, S]``, ``qr_every`` is not a
      positive int, ``qr`` is unknown, the transient leaves no steps, ``xs``
      is not one sequence ``[T, I]`` with the params' input size, ``params``
      do not fit the cell, or ``carry`` is not one unbatched carry.

  References:
    Benettin, Galgani, Giorgilli & Strelcyn (1980), Lyapunov characteristic
    exponents for smooth dynamical systems, Meccanica 15.
    Yamamoto, Nakatsukasa, Yanagisawa & Fukaya (2015), Roundoff error
    analysis of the CholeskyQR2 algorithm, ETNA 44.

  Examples:
    A linear RNN with ``W = I/2`` halves every direction at every step:

    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.elman(3, "linear", recurrent_init=rj.init.identity(0.5))
    >>> params = cell.init(jax.random.key(0), 2)
    >>> lams = rj.jacobian.lyapunov_spectrum(cell, params, jnp.zeros((10, 2)))
    >>> [round(float(l), 4) for l in lams]       # log(1/2) three times
    [-0.6931, -0.6931, -0.6931]
  """
  xs, carry = _check(cell, params, xs, carry, "rnnjax.jacobian.lyapunov_spectrum")
  S = cell.state_size
  k = S if k is None else k
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= S:
    raise ValueError(f"lyapunov_spectrum: k must lie in [1, S={S}] (the state size), got {k!r}")
  arguments.positive_int("qr_every", qr_every, "lyapunov_spectrum")
  arguments.choice("qr", qr, QR_METHODS, "lyapunov_spectrum")
  dtype = _dtype(xs, params)
  if qr == "auto":
    qr = "cholesky" if jnp.finfo(dtype).bits >= 64 else "householder"
  T = xs.shape[0]
  if not 0 <= transient < T:
    raise ValueError(
      f"lyapunov_spectrum: T={T} steps leave nothing after discarding a "
      f"transient of {transient}; use a longer xs or a shorter transient"
    )
  key = jax.random.key(0) if key is None else key
  state_jacobian = _state_jacobian(cell)
  act = cell.activation
  W = None if act is None else base.recurrent_weight(cell, params, "lyapunov_spectrum")
  Q0, _ = jnp.linalg.qr(jax.random.normal(key, (S, k), dtype))

  # The tangent basis Z is carried as columns [S, k] by the reference and as
  # rows Zᵀ [k, S] by the Cholesky route; `advance` is Z ← J_t Z in its layout.
  if qr == "householder":

    def advance(c: Carry, x: Array, Z: Array) -> tuple[Carry, Array]:
      return cell.step(params, c, x)[0], state_jacobian(params, c, x) @ Z  # J_t Z

    def factor(Z: Array, end: Array) -> tuple[Array, Array]:
      del end
      return _householder_qr(Z)

    Z0 = Q0
  else:

    def advance(c: Carry, x: Array, Z: Array) -> tuple[Carry, Array]:  # Z: rows [k, S]
      new, _ = cell.step(params, c, x)
      if act is not None and W is not None:  # J_tᵀ = w_h diag(f'(z_t)): no [S, S] matrix
        fprime = act.grad_from_output(flatten_state(cell, new))  # [S]
        return new, (Z @ W) * fprime[None, :]  # (J_t Z)ᵀ = Zᵀ J_tᵀ: [k, S]
      return new, Z @ state_jacobian(params, c, x).T  # (J_t Z)ᵀ = Zᵀ J_tᵀ

    def factor(Z: Array, end: Array) -> tuple[Array, Array]:  # Z: rows [k, S]
      Qt, logd, ok = _cholesky_qr_rows(Z)
      return lax.cond(ok & ~end, lambda: (Qt, logd), lambda: _householder_qr_rows(Z))

    Z0 = Q0.T

  def orthonormalise(
    Z: Array, acc: Array, counted: Array, block_start: Array, t: Array
  ) -> tuple[Array, Array, Array, Array]:
    use = block_start >= transient  # the block is past the transient
    end = (t == T - 1) | (~use & (t + 1 >= transient))  # the basis ends or starts the count
    Q, logd = factor(Z, end)
    acc = acc + jnp.where(use, logd, 0.0)
    counted = counted + jnp.where(use, t + 1 - block_start, 0)
    return Q, acc, counted, t + 1

  def body(
    state: tuple[Carry, Array, Array, Array, Array], inp: tuple[Array, Array]
  ) -> tuple[tuple[Carry, Array, Array, Array, Array], None]:
    c, Z, acc, counted, block_start = state
    x, t = inp
    c, Z = advance(c, x, Z)  # Z ← J_t Z
    if qr_every == 1:
      Z, acc, counted, block_start = orthonormalise(Z, acc, counted, block_start, t)
    else:
      due = ((t + 1 - block_start) >= qr_every) | (t == T - 1)
      Z, acc, counted, block_start = lax.cond(
        due, orthonormalise, lambda Z, a, n, b, t: (Z, a, n, b), Z, acc, counted, block_start, t
      )
    return (c, Z, acc, counted, block_start), None

  start = (carry, Z0, jnp.zeros((k,), dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
  (_, _, acc, counted, _), _ = lax.scan(body, start, (xs, jnp.arange(T, dtype=jnp.int32)))
  return jnp.sort(acc / counted)[::-1]


@partial(jax.jit, static_argnums=0, static_argnames=("eps", "transient"))
def max_lyapunov_perturbation(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  *,
  eps: float = 1e-7,
  transient: int = 0,
  key: Array | None = None,
) -> Array:
  """The largest Lyapunov exponent by direct simulation.

  A second trajectory starts ``ε`` away; its separation is measured and
  renormalised to ``ε`` every step. A check of `lyapunov_spectrum` that needs
  no Jacobian.

  Args:
    cell: the cell (static under ``jit``).
    params: its params.
    xs: the driving inputs ``[T, I]``.
    carry: the initial carry, unbatched (default zeros).
    eps: ``ε``, the separation (static).
    transient: steps whose growth is not counted (static).
    key: PRNG key of the perturbation's direction (default
      ``jax.random.key(1)``).

  Returns:
    A scalar, ``λ₁`` per step.
  """
  xs, carry = _check(cell, params, xs, carry, "rnnjax.jacobian.max_lyapunov_perturbation")
  T = xs.shape[0]
  key = jax.random.key(1) if key is None else key
  s = flatten_state(cell, carry)
  d = jax.random.normal(key, s.shape, s.dtype)
  c2 = unflatten_state(cell, s + eps * d / jnp.linalg.norm(d), carry)

  def body(
    state: tuple[Carry, Carry, Array], inp: tuple[Array, Array]
  ) -> tuple[tuple[Carry, Carry, Array], None]:
    c1, c2, acc = state
    x, t = inp
    c1, _ = cell.step(params, c1, x)
    c2, _ = cell.step(params, c2, x)
    s1, s2 = flatten_state(cell, c1), flatten_state(cell, c2)
    dist = jnp.linalg.norm(s2 - s1)
    acc = acc + jnp.where(t >= transient, jnp.log(dist / eps), 0.0)
    c2 = unflatten_state(cell, s1 + (s2 - s1) * (eps / dist), carry)
    return (c1, c2, acc), None

  (_, _, acc), _ = lax.scan(body, (carry, c2, jnp.zeros((), s.dtype)), (xs, jnp.arange(T)))
  return acc / (T - transient)


# ----------------------------------------------------------------- diagnosis


def diagnose(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  *,
  lyapunov_transient: int | None = None,
  tol: float = 0.01,
) -> dict[str, Any]:
  """One structured report on gradient flow along ``xs``.

  The verdict is ``"exploding"`` if products grow (``λ₁ > tol`` or the log
  product norm rises by more than ``tol`` per step over the longer half of
  the lags, past any transient), ``"vanishing"`` if it falls by more than
  ``tol`` per step there, else ``"stable"``.

  Args:
    cell: the cell.
    params: its params.
    xs: one sequence ``[T, I]``.
    carry: the initial carry, unbatched (default zeros).
    lyapunov_transient: steps discarded before ``λ₁`` is measured (default
      ``T // 4``).
    tol: the growth rate per step (natural log) that counts as growing or
      shrinking.

  Returns:
    A JSON-ready dict: ``cell``, ``T``, ``state_size``, ``verdict``,
    ``evidence`` (``λ₁``, the log product norm's slope and value at the
    longest lag, mean and max step norms, ``tol``), the per-step spectral and
    Frobenius norms, ``log ‖∏ J‖₂`` by lag, ``‖∂L_T/∂s_k‖`` by lag, and for a
    cell that declares its activation ``lecture_bound`` and ``pascanu``
    (`PascanuConditions` as a dict); ``parallel_evaluation``, the prediction
    for `rnnjax.parallel_scan`'s DEER iterations on ``xs`` (`parallel_outlook`).

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.elman(4, "linear", recurrent_init=rj.init.identity(1.5))
    >>> params = cell.init(jax.random.key(0), 2)
    >>> report = rj.jacobian.diagnose(cell, params, jnp.ones((20, 2)))
    >>> report["verdict"], round(report["evidence"]["lyapunov_max"], 3)  # log 1.5
    ('exploding', 0.405)
    >>> report["pascanu"]["exploding_necessary"]
    True
  """
  xs, carry = _check(cell, params, xs, carry, "rnnjax.diagnose")
  T = xs.shape[0]
  Js = step_jacobians(cell, params, xs, carry)
  n = norms(Js)
  logprod = log_product_norms(Js)
  grads = gradient_norms_vs_lag(cell, params, xs, carry)
  transient = T // 4 if lyapunov_transient is None else lyapunov_transient
  lam1 = float(lyapunov_spectrum(cell, params, xs, carry, k=1, transient=transient)[0])
  half = T // 2  # asymptotic growth: the slope over the longer
  rate = float(logprod[-1] - logprod[half - 1]) / (T - half) if T > 1 else float(logprod[-1])
  if lam1 > tol or rate > tol:
    verdict = "exploding"
  elif rate < -tol:
    verdict = "vanishing"
  else:
    verdict = "stable"
  max_norm = float(jnp.max(n["spectral"]))
  report: dict[str, Any] = dict(
    cell=repr(cell),
    T=T,
    state_size=cell.state_size,
    verdict=verdict,
    evidence=dict(
      lyapunov_max=lam1,
      log_product_norm_per_step=rate,
      log_product_norm_at_max_lag=float(logprod[-1]),
      mean_step_spectral_norm=float(jnp.mean(n["spectral"])),
      max_step_spectral_norm=max_norm,
      # every step contracts along this trajectory: products vanish here
      measured_vanishing_sufficient=max_norm < 1.0,
      tol=tol,
    ),
    step_spectral_norm=np.asarray(n["spectral"]).tolist(),
    step_frobenius_norm=np.asarray(n["frobenius"]).tolist(),
    log_product_norm_by_lag=np.asarray(logprod).tolist(),
    grad_norm_by_lag=np.asarray(grads[::-1]).tolist(),
  )
  report["parallel_evaluation"] = parallel_outlook(
    cell, params, xs, carry, lyapunov_transient=lyapunov_transient
  )
  if cell.activation is not None:
    report["lecture_bound"] = np.asarray(lecture_bound(cell, params, xs, carry)).tolist()
    report["pascanu"] = pascanu_conditions(cell, params)._asdict()
  return report


OUTLOOK_METHODS = ("deer",)
"""The methods `parallel_outlook` predicts for."""
OUTLOOK_WINDOW_ITERATIONS = 3.0
"""Newton iterations per nat of the largest window growth along the trajectory (see
`parallel_outlook`), calibrated on ``benchmarks/results/parallel_outlook_cpu.md``."""
OUTLOOK_FRONT_RATE = 2.5
"""The fraction of T that DEER's front needs per nat of growth per step halfway to its
start (see `parallel_outlook`), calibrated on the same grid."""
OUTLOOK_FRONT_THRESHOLD = 0.02
"""The growth per step halfway to DEER's start below which no front forms (nats)."""
OUTLOOK_EDGE = 0.2
"""``λ₁`` above ``−OUTLOOK_EDGE`` counts as near the edge of chaos: the trajectory does
not damp a Newton error before the next unpredictable stretch."""


@partial(jax.jit, static_argnums=0)
def _outlook_growth(cell: Cell, params: Params, xs: Array, carry: Carry) -> tuple[Array, Array]:
  """Per-step log growth of a tangent vector carried by the step Jacobians along the
  trajectory (``J_t`` at ``s_{t-1}``) and along the states halfway to DEER's start
  (``J_t`` at ``s_{t-1} / 2``, DEER starting from zeros): ``([T], [T])``."""
  jac_fn = _state_jacobian(cell)
  s0 = flatten_state(cell, carry)
  v0 = jnp.ones_like(s0) / math.sqrt(s0.shape[-1])
  tiny = jnp.finfo(s0.dtype).tiny

  def push(J: Array, v: Array) -> tuple[Array, Array]:
    w = J @ v
    n = jnp.linalg.norm(w)
    ok = n > tiny  # a Jacobian that kills the vector: restart it
    return jnp.where(ok, w / jnp.where(ok, n, 1.0), v0), jnp.log(jnp.maximum(n, tiny))

  def body(
    state: tuple[Carry, Array, Array], x: Array
  ) -> tuple[tuple[Carry, Array, Array], tuple[Array, Array]]:
    c, v, w = state
    s = flatten_state(cell, c)
    v, gv = push(jac_fn(params, c, x), v)
    w, gw = push(jac_fn(params, unflatten_state(cell, 0.5 * s, c), x), w)
    new, _ = cell.step(params, c, x)
    return (new, v, w), (gv, gw)

  _, (g_traj, g_half) = lax.scan(body, (carry, v0, v0), xs)
  return g_traj, g_half


def _max_window(g: np.ndarray) -> float:
  """The largest sum of ``g`` over a window of consecutive steps (0 for none): the
  log of the largest growth any stretch of the trajectory gives a perturbation."""
  prefix = np.concatenate([[0.0], np.cumsum(g, dtype=np.float64)])
  return float(np.max(prefix - np.minimum.accumulate(prefix)))


def parallel_outlook(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  *,
  tol: float | None = None,
  method: str = "deer",
  lyapunov_transient: int | None = None,
) -> dict[str, Any]:
  """How many Newton iterations `rnnjax.parallel_scan` will need on ``xs``, with a range.

  Measured on the inputs the parallel evaluation will run (the prediction is
  about this trajectory, not the cell in general). Gonzalez, Kozachkov,
  Zoltowski, Clarkson & Linderman (2025) tie the conditioning of DEER's merit
  function to how perturbations grow along the trajectory: if every window of
  k steps grows them at most ``a·e^{λk}``, the residual Jacobian's inverse is
  bounded by ``κ = a·Σ_{k<T} e^{λk}`` (its Polyak–Łojasiewicz constant is at
  least ``1/κ²``): bounded in T for ``λ < 0`` (predictable: O((log T)²) depth),
  exponential in T for ``λ > 0``. The average ``λ₁`` alone misses what breaks
  driven systems: stretches where perturbations grow although ``λ₁ < 0`` (the
  constant ``a``), and states between DEER's start (zeros) and the trajectory
  where the linearisation expands. Both are measured:

  - ``λ₁``, by `lyapunov_spectrum` (``k=1``);
  - ``G``, the largest log growth over any window along the trajectory
    (``a ≤ e^G``), from the step Jacobians' action on a carried tangent vector;
  - ``λ½``, the mean log growth per step of the step Jacobians taken halfway
    between zeros and the trajectory, where the first iterates live.

  The prediction adds three terms, each from one part of the analysis:

      n = n_newton + OUTLOOK_WINDOW_ITERATIONS · G + n_front,
      n_newton = 2 + log₂(log₁₀(1/tol))                (quadratic convergence),
                 doubled near the edge: λ₁ > −OUTLOOK_EDGE, λ½ > −OUTLOOK_FRONT_THRESHOLD
      n_front  = T · min(1, OUTLOOK_FRONT_RATE · (λ½ − OUTLOOK_FRONT_THRESHOLD))
                 when λ₁ > −OUTLOOK_EDGE and λ½ > OUTLOOK_FRONT_THRESHOLD, else 0,

  capped at T (DEER is exact after T iterations); ``λ₁T > 1`` (chaotic:
  perturbations grow over the sequence) predicts T. A front forms when the
  iterates' linearisation expands and the trajectory does not damp the errors
  (``λ₁`` near 0): the exact prefix then advances a bounded number of steps per
  iteration, so the count grows like T.
  The constants are calibrated on the grid of
  ``benchmarks/results/parallel_outlook_cpu.md`` (tanh RNNs at gains 0.5–3,
  driven and not, a GRU and an LSTM before and after training), where the
  hit rate is stated; the range is the factor-2 band the grid was checked
  against.

  Args:
    cell: the cell.
    params: its params.
    xs: the inputs the parallel evaluation will run, one sequence ``[T, I]``
      or a batch ``[T, B, I]`` (as `rnnjax.parallel_scan` takes them; the
      prediction is the batch's worst sequence, since the iteration runs until
      every sequence converges).
    carry: the initial carry, unbatched for ``[T, I]`` or batched for
      ``[T, B, I]`` (default zeros).
    tol: the tolerance `rnnjax.parallel_scan` will be given (default its own:
      1e-5 in float32, 1e-10 in float64).
    method: ``"deer"`` (the method the analysis covers).
    lyapunov_transient: steps discarded before ``λ₁`` is measured (default
      ``T // 4``).

  Returns:
    A JSON-ready dict: ``iterations`` (the prediction), ``range`` ``(lo, hi)``,
    ``pays_off`` (at most T/10 iterations predicted: fewer than a tenth of a
    sequential pass's steps, each an O(log T)-depth scan), ``prediction``
    (``"fast"``: pays off, ``"slow"``: converges but does not pay off,
    ``"no"``: chaotic, or the prediction reaches T), ``lyapunov_max``
    (``λ₁``), ``window_growth`` (``G``), ``halfway_growth`` (``λ½``),
    ``log_conditioning`` (``log κ`` with ``a = e^G``), ``T``, ``tol``,
    ``method`` and ``why``.

  Raises:
    TypeError: ``cell`` is not a Cell, or ``xs`` is not floating point.
    ValueError: ``xs`` that is not ``[T, I]`` or ``[T, B, I]``, a carry that
      does not match, a ``tol`` that is not positive, an unknown ``method``,
      or a ``lyapunov_transient`` outside ``[0, T)``.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.elman(8, recurrent_init=rj.init.gaussian(0.5))
    >>> params = cell.init(jax.random.key(0), 2)
    >>> xs = jax.random.normal(jax.random.key(1), (200, 2))
    >>> out = rj.jacobian.parallel_outlook(cell, params, xs)
    >>> out["prediction"], out["pays_off"], out["iterations"] <= 8
    ('fast', True, True)
  """
  what = "rnnjax.jacobian.parallel_outlook"
  if method in ("quasi", "elk", "quasi-elk"):
    raise ValueError(
      f"{what}: method {method!r} is not predicted: the analysis covers DEER's Newton "
      f"iterations (method='deer'); quasi-DEER's also depend on the Jacobians' off-diagonal "
      f"coupling and ELK's on its damping"
    )
  arguments.choice("method", method, OUTLOOK_METHODS, what)
  if tol is not None and not (
    isinstance(tol, (int, float, np.floating)) and not isinstance(tol, bool) and tol > 0
  ):
    raise ValueError(f"{what}: tol must be a positive number, got {tol!r}")
  if not isinstance(cell, Cell):
    raise TypeError(f"{what}: cell must be an rnnjax Cell, got {type(cell).__name__}")
  xs = jnp.asarray(xs)
  if xs.ndim not in (2, 3):
    raise ValueError(
      f"{what}: xs must be one sequence [T, I] or a batch [T, B, I], got shape {tuple(xs.shape)}"
    )
  if xs.ndim == 3:  # [T, B, I]: one outlook per sequence, the worst reported
    B = xs.shape[1]
    if B < 1:
      raise ValueError(f"{what}: xs has no sequences (xs.shape={tuple(xs.shape)})")
    rows = []
    for b in range(B):
      cb = None if carry is None else jax.tree.map(lambda a, b=b: a[b], carry)
      rows.append(
        parallel_outlook(
          cell,
          params,
          xs[:, b],
          cb,
          tol=tol,
          method=method,
          lyapunov_transient=lyapunov_transient,
        )
      )
    worst = max(rows, key=lambda r: r["iterations"])
    return dict(worst, batch=B)
  xs, carry = _check(cell, params, xs, carry, what)
  T = int(xs.shape[0])
  transient = T // 4 if lyapunov_transient is None else lyapunov_transient
  if not isinstance(transient, int) or not 0 <= transient < T:
    raise ValueError(
      f"{what}: lyapunov_transient must be an int in [0, T={T}), got {lyapunov_transient!r}"
    )
  dtype = _dtype(xs, params)
  if tol is None:
    tol = 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5
  lam1 = float(lyapunov_spectrum(cell, params, xs, carry, k=1, transient=transient)[0])
  g_traj, g_half = (np.asarray(g, np.float64) for g in _outlook_growth(cell, params, xs, carry))
  return dict(
    outlook_from(lam1, _max_window(g_traj), float(np.mean(g_half)), T, float(tol)),
    method=method,
  )


def outlook_from(
  lyapunov_max: float, window_growth: float, halfway_growth: float, T: int, tol: float
) -> dict[str, Any]:
  """`parallel_outlook`'s prediction from its measurements (``λ₁``, ``G``, ``λ½``).

  Pure arithmetic, so a stored grid of measurements can be re-scored when the
  constants change (``benchmarks/parallel_outlook.py --rescore``).
  """
  lam1, G, lam_half = lyapunov_max, window_growth, halfway_growth
  k = np.arange(T, dtype=np.float64)
  log_kappa = G + float(np.logaddexp.reduce(lam1 * k))
  n_newton = 2.0 + math.log2(max(math.log10(1.0 / tol), 1.0))
  edge = lam1 > -OUTLOOK_EDGE and lam_half > -OUTLOOK_FRONT_THRESHOLD
  if edge:  # the basin of quadratic convergence shrinks with the conditioning
    n_newton *= 2
  n_window = OUTLOOK_WINDOW_ITERATIONS * G
  front = lam1 > -OUTLOOK_EDGE and lam_half > OUTLOOK_FRONT_THRESHOLD
  frac = min(1.0, OUTLOOK_FRONT_RATE * (lam_half - OUTLOOK_FRONT_THRESHOLD)) if front else 0.0
  chaotic = lam1 * T > 1  # perturbations grow by more than e over the sequence
  n = float(T) if chaotic else min(float(T), n_newton + n_window + frac * T)
  iterations = max(1, round(n))
  lo, hi = max(1, math.floor(n / 2)), min(T, math.ceil(2 * n))
  pays_off = iterations <= T / 10
  prediction = "no" if chaotic or iterations >= T else ("fast" if pays_off else "slow")
  if chaotic:
    why = (
      f"λ₁ = {lam1:+.3f} > 1/T: chaotic, the merit function's conditioning degrades like "
      f"e^(λ₁T); DEER converges only after a sizeable fraction of T "
      f"iterations (0.6–0.75 T measured at g = 3): evaluate sequentially"
    )
  elif frac > 0:
    why = (
      f"λ₁ = {lam1:+.3f} is near 0 and the linearisation halfway to DEER's start expands "
      f"({lam_half:+.3f} per step): the exact prefix advances a bounded number of steps per "
      f"iteration, about {frac:.2f}·T iterations"
    )
  elif G > 1.0:
    why = (
      f"λ₁ = {lam1:+.3f} < 0, but a stretch of the trajectory grows perturbations by "
      f"e^{G:.1f}: about {n_window:.0f} iterations to cross it"
    )
  else:
    why = f"λ₁ = {lam1:+.3f} < 0 and no stretch grows perturbations: predictable, few iterations"
  if not pays_off and prediction != "no":
    why += f"; more than T/10 = {T / 10:g} iterations: does not pay off"
  return dict(
    iterations=iterations,
    range=(lo, hi),
    pays_off=bool(pays_off),
    prediction=prediction,
    lyapunov_max=lam1,
    window_growth=G,
    halfway_growth=lam_half,
    log_conditioning=log_kappa,
    T=T,
    tol=tol,
    why=why,
  )


def parallel_prediction(lyapunov_max: float, tol: float = 0.01) -> dict[str, Any]:
  """Deprecated: use `parallel_outlook`, which measures what ``λ₁`` alone misses.

  The verdict from the sign of ``λ₁`` alone (``"fast"`` below ``-tol``,
  ``"slow"`` within ``tol`` of 0, ``"no"`` above): wrong on driven systems
  whose average ``λ₁`` is negative but whose iterates expand (a tanh RNN at
  g = 3 driven by N(0, 1) inputs: ``λ₁ ≈ −0.06``, yet DEER needs about T
  iterations). Kept for one release.

  Args:
    lyapunov_max: ``λ₁`` (natural log per step).
    tol: the band around 0 counted as the edge.

  Returns:
    ``{"prediction": "fast" | "slow" | "no", "lyapunov_max": λ₁, "why": ...}``.
  """
  warnings.warn(
    "rnnjax.jacobian.parallel_prediction judges from the sign of λ₁ alone and is wrong on "
    "driven systems; use rnnjax.jacobian.parallel_outlook(cell, params, xs), which predicts "
    "the iterations on the inputs you will run. parallel_prediction goes in the next release",
    DeprecationWarning,
    stacklevel=2,
  )
  if lyapunov_max < -tol:
    prediction, why = "fast", "λ₁ < 0: contracting"
  elif lyapunov_max <= tol:
    prediction, why = "slow", "λ₁ ≈ 0: at the edge of chaos"
  else:
    prediction, why = "no", "λ₁ > 0: chaotic"
  return dict(prediction=prediction, lyapunov_max=lyapunov_max, why=why)
