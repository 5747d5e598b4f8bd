"""minGRU and minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were
RNNs All We Needed?", arXiv 2410.01201), and their exact parallel evaluation.

Both cells drop the hidden state from their gates, so everything that reads
``x_t`` is one affine map, hoisted out of the loop (the ``project`` hint), and
the recurrence is elementwise and linear in ``h``::

    h_t = a_t ⊙ h_{t-1} + b_t,      a_t, b_t > 0 functions of x_t alone

Such a recurrence is a composition of affine maps, which is associative, so
the whole trajectory is one `jax.lax.associative_scan` (`parallel_trajectory`)
instead of ``T`` sequential steps; the scan runs in log space, as the paper's
appendix does, which is why the candidate goes through ``g`` (positive) rather
than ``tanh``.

Notation (the zoo's, row-vector layout ``x @ W``): ``x_t: [B, I]``,
``h_t: [B, H]``, ``σ`` the logistic sigmoid, ``⊙`` the elementwise product,
``softplus(x) = log(1 + eˣ)``. The paper's activation and its logarithm::

    g(x) = x + 1/2 (x ≥ 0),   σ(x) (x < 0)
    log g(x) = log(relu(x) + 1/2) (x ≥ 0),   −softplus(−x) (x < 0)

``g`` is continuous (both branches are 1/2 at 0) and positive, so ``log g``
exists everywhere.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import arguments
from rnnjax._src import init as inits
from rnnjax._src.cells import base
from rnnjax._src.custom import build
from rnnjax._src.typing import Array, DType

__all__ = [
  "MinGRUParams",
  "MinLSTMParams",
  "g",
  "log_g",
  "mingru",
  "minlstm",
  "parallel_trajectory",
]

LINEAR = {"mingru": 2, "minlstm": 3}  # the cells linear in h: kind -> [H] blocks of zx


def g(x: Array) -> Array:
  """The paper's candidate activation: ``x + 1/2`` for ``x ≥ 0``, ``σ(x)`` below."""
  return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x: Array) -> Array:
  """``log g(x)``: ``log(relu(x) + 1/2)`` for ``x ≥ 0``, ``−softplus(−x)`` below.

  Both branches are finite everywhere, so ``jnp.where`` passes no NaN gradient.
  """
  return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


# ----------------------------------------------------------------- minGRU


class MinGRUParams(NamedTuple):
  """The params of `rnnjax.mingru`, blocks in the order (z, h̃).

  Attributes:
    w_x: ``[I, 2H]``, the weights of the paper's two ``Linear_dh`` layers, for
      the update gate's ``k`` and the candidate's ``h̃pre``, side by side.
    b: ``[2H]``, their biases.
  """

  w_x: Array  # [I, 2H]  blocks (z, h̃)
  b: Array  # [2H]


def _mingru_coeffs(zx: Array, H: int) -> tuple[Array, Array]:
  """``(a_t, b_t)`` of minGRU's ``h_t = a_t ⊙ h_{t-1} + b_t``, in linear space."""
  z = jax.nn.sigmoid(zx[..., :H])
  return 1.0 - z, z * g(zx[..., H:])


def _mingru_log_coeffs(zx: Array, H: int) -> tuple[Array, Array]:
  """``(log a_t, log b_t)`` of minGRU: ``log(1 − σ(k)) = −softplus(k)``,
  ``log(σ(k) g(h̃)) = −softplus(−k) + log g(h̃)``."""
  k, pre = zx[..., :H], zx[..., H:]
  return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(pre)


@base.memoized
def mingru(hidden_size: int, *, param_dtype: DType = jnp.float32) -> base.Cell:
  """minGRU (Feng et al. 2024): a GRU whose gate and candidate read only ``x_t``.

  With ``k_t`` and ``h̃pre_t`` the two ``[H]`` blocks of ``zx_t = x_t w_x + b``::

      z_t = σ(k_t)
      h̃_t = g(h̃pre_t)
      h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

  The input projection ``zx`` is the cell's hoisted ``project`` (one matmul
  over all ``T·B`` rows); each step is the elementwise update above, computed
  in linear space. `rnnjax.parallel_trajectory` gives the same ``h_1..h_T`` by
  one associative scan.

  Args:
    hidden_size: H.
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`'s machinery, with the
    ``project`` hint) with params `MinGRUParams` and carry ``h: [..., H]``;
    LeCun-normal ``w_x``, zero ``b``.

  Raises:
    ValueError: ``hidden_size`` is not a positive int.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.mingru(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    >>> ys.shape, params.w_x.shape
    ((5, 2, 4), (3, 8))
  """
  what = "rnnjax.mingru"
  H = arguments.positive_int("hidden_size", hidden_size, what)

  def init(key: Array, input_size: int) -> MinGRUParams:
    return MinGRUParams(
      w_x=inits.lecun_normal()(key, (input_size, 2 * H), param_dtype),
      b=jnp.zeros((2 * H,), param_dtype),
    )

  def update(params: MinGRUParams, h: Array, zx: Array) -> tuple[Array, Array]:
    a, b = _mingru_coeffs(zx, H)
    new = (a * h + b).astype(h.dtype)
    return new, new

  def step(params: MinGRUParams, h: Array, x: Array) -> tuple[Array, Array]:
    return update(params, h, _project(params, x))

  return build(
    init,
    step,
    base.zeros_carry(H),
    name="mingru",
    what=what,
    output_size=H,
    project=_project,
    update=update,
  )


# ----------------------------------------------------------------- minLSTM


class MinLSTMParams(NamedTuple):
  """The params of `rnnjax.minlstm`, blocks in the order (f, i, h̃).

  Attributes:
    w_x: ``[I, 3H]``, the forget gate's, the input gate's and the candidate's
      weights side by side.
    b: ``[3H]``, their biases.
  """

  w_x: Array  # [I, 3H]  blocks (f, i, h̃)
  b: Array  # [3H]


def _minlstm_coeffs(zx: Array, H: int) -> tuple[Array, Array]:
  """``(a_t, b_t) = (f'_t, i'_t ⊙ g(h̃pre_t))`` of minLSTM, in linear space."""
  f = jax.nn.sigmoid(zx[..., :H])
  i = jax.nn.sigmoid(zx[..., H : 2 * H])
  return f / (f + i), i / (f + i) * g(zx[..., 2 * H :])


def _minlstm_log_coeffs(zx: Array, H: int) -> tuple[Array, Array]:
  """``(log f'_t, log i'_t + log g(h̃pre_t))`` of minLSTM.

  With ``log σ(x) = −softplus(−x)``, ``d = log i − log f = softplus(−f_pre) −
  softplus(−i_pre)``, and ``log f' = −log(1 + i/f) = −softplus(d)``,
  ``log i' = −log(1 + f/i) = −softplus(−d)``.
  """
  d = jax.nn.softplus(-zx[..., :H]) - jax.nn.softplus(-zx[..., H : 2 * H])
  return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_g(zx[..., 2 * H :])


@base.memoized
def minlstm(hidden_size: int, *, param_dtype: DType = jnp.float32) -> base.Cell:
  """minLSTM (Feng et al. 2024): an LSTM whose gates read only ``x_t``, with the
  forget and input gates normalised to sum to one and no output gate.

  With ``f_pre, i_pre, h̃pre`` the three ``[H]`` blocks of ``zx_t = x_t w_x + b``::

      f_t = σ(f_pre_t),   i_t = σ(i_pre_t)
      f'_t = f_t / (f_t + i_t),   i'_t = i_t / (f_t + i_t)
      h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ g(h̃pre_t)

  The normalisation makes ``h_t`` a convex combination of ``h_{t-1}`` and the
  candidate, so its scale does not grow with ``t`` (the paper's
  time-independence). As with `rnnjax.mingru`, ``zx`` is the hoisted
  ``project``, each step is elementwise in linear space, and
  `rnnjax.parallel_trajectory` gives the same trajectory by one scan.

  Args:
    hidden_size: H.
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` with params `MinLSTMParams` and carry ``h: [..., H]``;
    LeCun-normal ``w_x``, zero ``b`` (so ``f' = i' = 1/2`` at init for zero input).

  Raises:
    ValueError: ``hidden_size`` is not a positive int.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.minlstm(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    >>> ys.shape, params.w_x.shape
    ((5, 2, 4), (3, 12))
  """
  what = "rnnjax.minlstm"
  H = arguments.positive_int("hidden_size", hidden_size, what)

  def init(key: Array, input_size: int) -> MinLSTMParams:
    return MinLSTMParams(
      w_x=inits.lecun_normal()(key, (input_size, 3 * H), param_dtype),
      b=jnp.zeros((3 * H,), param_dtype),
    )

  def update(params: MinLSTMParams, h: Array, zx: Array) -> tuple[Array, Array]:
    a, b = _minlstm_coeffs(zx, H)
    new = (a * h + b).astype(h.dtype)
    return new, new

  def step(params: MinLSTMParams, h: Array, x: Array) -> tuple[Array, Array]:
    return update(params, h, _project(params, x))

  return build(
    init,
    step,
    base.zeros_carry(H),
    name="minlstm",
    what=what,
    output_size=H,
    project=_project,
    update=update,
  )


def _project(params: MinGRUParams | MinLSTMParams, x: Array) -> Array:
  """``zx = x @ w_x + b: [..., kH]``, the only part of either cell that reads ``x``."""
  return base.affine(x, params.w_x, params.b)


# ----------------------------------------------------------------- parallel evaluation


def _compose(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
  """Two affine maps ``h ↦ a h + b`` in log space, ``earlier`` applied first:
  ``(log a₁ + log a₂, logaddexp(log b₁ + log a₂, log b₂))``."""
  la1, lb1 = earlier
  la2, lb2 = later
  return la1 + la2, jnp.logaddexp(lb1 + la2, lb2)


def parallel_trajectory(
  kind: str | base.Cell,
  params: MinGRUParams | MinLSTMParams,
  xs: Array,
  h0: Array,
) -> Array:
  """The exact trajectory of `rnnjax.mingru` or `rnnjax.minlstm` by one
  `jax.lax.associative_scan`, in log space (the paper's parallel mode).

  Both cells are ``h_t = a_t ⊙ h_{t-1} + b_t`` with ``a_t, b_t > 0`` functions
  of ``x_t`` alone (minGRU: ``a = 1 − z``, ``b = z ⊙ g(h̃pre)``; minLSTM:
  ``a = f'``, ``b = i' ⊙ g(h̃pre)``), so::

      h_t = A_t ⊙ h_0 + Σ_{s≤t} (Π_{s<r≤t} a_r) ⊙ b_s,      A_t = Π_{r≤t} a_r

  The scan composes the maps ``h ↦ a h + b`` as pairs ``(log a, log b)``:
  ``(α₁, β₁)`` then ``(α₂, β₂)`` is ``(α₁ + α₂, logaddexp(β₁ + α₂, β₂))``,
  whose prefix at ``t`` is ``(log A_t, log Σ_s ...)``. The log coefficients
  come from the pre-activations without forming ``a`` or ``b`` (minGRU:
  ``log a = −softplus(k)``, ``log b = −softplus(−k) + log g(h̃pre)``; minLSTM:
  with ``d = softplus(−f_pre) − softplus(−i_pre)``, ``log f' = −softplus(d)``,
  ``log i' = −softplus(−d)``). This is the paper's ``a*_t + logcumsumexp(log
  b − a*)`` computed without subtracting the large ``a*_s``. The initial
  state enters in linear space, ``exp(log A_t) ⊙ h_0``, so any real ``h_0``
  works (zero or negative included), not only the paper's ``g(h_0) > 0``.

  Args:
    kind: ``"mingru"`` or ``"minlstm"``, or the cell itself (``rj.mingru(H)``).
    params: the cell's params (`MinGRUParams` or `MinLSTMParams`).
    xs: ``[T, ..., I]`` inputs, time first (``[T, B, I]``).
    h0: ``[..., H]`` initial state, the batch shape of ``xs`` (``[B, H]``).

  Returns:
    ``hs: [T, ..., H]``, equal to ``rj.scan(cell, params, xs, h0)[1]`` (to
    rounding). No ``lengths`` or ``resets``: run `rnnjax.scan` for those.

  Raises:
    ValueError: an unknown kind, or shapes that do not fit (each message names
      the shapes and the fix).

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> from rnnjax._src.cells.minrnn import mingru, parallel_trajectory
    >>> cell = mingru(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> xs, h0 = jax.random.normal(jax.random.key(1), (6, 2, 3)), jnp.zeros((2, 4))
    >>> hs = parallel_trajectory("mingru", params, xs, h0)
    >>> bool(jnp.allclose(hs, rj.scan(cell, params, xs, h0)[1], atol=1e-6))
    True
  """
  what = "rnnjax.parallel_trajectory"
  name = kind.name if isinstance(kind, base.Cell) else kind
  if name not in LINEAR:
    raise ValueError(
      f"{what}: kind must be 'mingru' or 'minlstm' (or rj.mingru(H) / rj.minlstm(H)), "
      f"got {name!r}; other cells have a nonlinear recurrence: run rnnjax.scan"
    )
  k = LINEAR[name]
  w_x, b = params.w_x, params.b
  if w_x.ndim != 2 or b.shape != (w_x.shape[1],) or w_x.shape[1] % k:
    raise ValueError(
      f"{what}({name!r}): params have w_x {w_x.shape} and b {b.shape}; {name} needs "
      f"w_x [I, {k}H] and b [{k}H]: pass {name}(H).init(key, I)'s params"
    )
  H, I = w_x.shape[1] // k, w_x.shape[0]
  xs, h0 = jnp.asarray(xs), jnp.asarray(h0)
  if xs.ndim < 2 or xs.shape[-1] != I:
    raise ValueError(
      f"{what}({name!r}): xs has shape {xs.shape}, but the params take [T, ..., I] with "
      f"I = {I} (w_x is {w_x.shape}): pass time-major inputs [T, B, {I}]"
    )
  if h0.shape != (*xs.shape[1:-1], H):
    raise ValueError(
      f"{what}({name!r}): h0 has shape {h0.shape}, but xs {xs.shape} and w_x {w_x.shape} "
      f"need {(*xs.shape[1:-1], H)}, xs's batch shape and H: pass h0 [B, {H}] "
      f"(zeros for cell.initial_carry)"
    )
  zx = _project(params, xs)  # [T, ..., kH]
  log_coeffs = _mingru_log_coeffs if name == "mingru" else _minlstm_log_coeffs
  log_a, log_b = log_coeffs(zx, H)  # each [T, ..., H]
  log_A, log_sum = jax.lax.associative_scan(_compose, (log_a, log_b), axis=0)
  hs = jnp.exp(log_A) * h0[None] + jnp.exp(log_sum)
  return hs.astype(jnp.result_type(h0, zx))
