"""The gated recurrent unit, with the reset gate before or after ``W_hn``.

Gate blocks in the order (r, z, n); row-vector layout, ``w_x: [I, 3H]``,
``w_h: [H, 3H]``, ``b: [3H]`` (and ``b_hn: [H]`` for ``reset="after"``):

    r_t = σ(x_t w_xr + h_{t-1} w_hr + b_r)                 # reset gate
    z_t = σ(x_t w_xz + h_{t-1} w_hz + b_z)                 # update gate
    reset="before" (the lecture):
      n_t = tanh(x_t w_xn + (r_t ⊙ h_{t-1}) w_hn + b_n)
    reset="after" (PyTorch nn.GRU, flax GRUCell, cuDNN):
      n_t = tanh(x_t w_xn + b_n + r_t ⊙ (h_{t-1} w_hn + b_hn))
    h_t = z_t ⊙ h_{t-1} + (1 − z_t) ⊙ n_t

PyTorch ``nn.GRU`` (its gate order is also r, z, n) maps as ``w_x = weight_ih_l0.T``,
``w_h = weight_hh_l0.T``, ``b = bias_ih_l0 + [bias_hh_l0[:2H], 0]``,
``b_hn = bias_hh_l0[2H:]``.

Backward of one step:

    dz   = dh_t ⊙ (h_{t-1} − n_t)                         # through the interpolation
    dn   = dh_t ⊙ (1 − z_t) ⊙ (1 − n_t²)                   # through tanh
    dz   = dz ⊙ z_t (1 − z_t);  dr = (...) ⊙ r_t (1 − r_t)  # through σ
    dh_{t-1} = dh_t ⊙ z_t + (recurrent pre-activation grads) w_hᵀ
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp

from rnnjax._src import arguments
from rnnjax._src import init as inits
from rnnjax._src.cells import base, tiles
from rnnjax._src.cells.tiles import Blocks
from rnnjax._src.custom import build
from rnnjax._src.hints import BackwardRows, ClosedDiagonal, ClosedJacobian
from rnnjax._src.typing import Array, DType

Residuals = tuple[Array, Array, Array, Array | None]
"""What a GRU step keeps for its backward: ``(r, z, n, hn)``, each ``[B, H]``;
``hn = h w_hn + b_hn`` for ``reset="after"``, else None."""


class GRUParams(NamedTuple):
  """The params of `rnnjax.gru`, gate blocks in the order (r, z, n).

  Attributes:
    w_x: ``[I, 3H]``, the input weights of the three blocks side by side.
    w_h: ``[H, 3H]``, the recurrent weights.
    b: ``[3H]``, the biases (PyTorch's ``b_ih`` plus the r and z blocks of
      ``b_hh``).
    b_hn: ``[H]``, the bias inside ``r ⊙ (h w_hn + b_hn)`` for
      ``reset="after"``; None for ``reset="before"``.
  """

  w_x: Array  # [I, 3H]  blocks (r, z, n)
  w_h: Array  # [H, 3H]  blocks (r, z, n)
  b: Array  # [3H]
  b_hn: Array | None = None  # [H], reset="after" only


def blend(h: Array, z: Array, n: Array) -> Array:
  """``h_t = z ⊙ h_{t-1} + (1 − z) ⊙ n``, the GRU's interpolation."""
  return z * h + (1.0 - z) * n


def blend_backward(dh: Array, h_prev: Array, z: Array, n: Array) -> tuple[Array, Array]:
  """`blend`'s backward to the pre-activations of ``z`` (through σ) and ``n``
  (through tanh): ``(dz, dn)``."""
  dz = dh * (h_prev - n) * z * (1.0 - z)  # h = z h_prev + (1-z) n; σ'
  dn = dh * (1.0 - z) * (1.0 - n * n)  # through tanh
  return dz, dn


def sigmoid_backward(d: Array, s: Array) -> Array:
  """``d ⊙ σ'`` for ``s = σ(·)``: the reset gate's pre-activation gradient."""
  return d * s * (1.0 - s)


@functools.lru_cache(maxsize=2)
def pallas_rule(after: bool) -> tiles.Rule:
  """The GRU's step on the Pallas kernel's tiles, reset gate before (lecture) or
  after (cuDNN) ``w_hn``, with `blend`, `blend_backward` and `sigmoid_backward`."""
  mm, mm_t, mm_t_gates = tiles.mm, tiles.mm_t, tiles.mm_t_gates

  def forward(
    w: Blocks, b_hn: Array, carry: Blocks, zx: Blocks, cdt: Any, acc: Any
  ) -> tuple[Blocks, Blocks]:
    (h,) = carry
    r = jax.nn.sigmoid(zx[0] + mm(h, w[0], cdt, acc))  # reset gate
    z = jax.nn.sigmoid(zx[1] + mm(h, w[1], cdt, acc))  # update gate
    if after:
      hn = mm(h, w[2], cdt, acc) + b_hn.astype(acc)  # h w_hn + b_hn
      n = jnp.tanh(zx[2] + r * hn)
      res: Blocks = (r, z, n, hn)
    else:
      n = jnp.tanh(zx[2] + mm(r * h, w[2], cdt, acc))  # (r ⊙ h) w_hn
      res = (r, z, n)
    return (blend(h, z, n).astype(cdt),), res

  def backward(
    w: Blocks,
    b_hn: Array,
    prev: Blocks,
    cur: Blocks,
    res: Blocks,
    d: Blocks,
    cdt: Any,
    acc: Any,
  ) -> tuple[Blocks, Blocks, Blocks]:
    del b_hn, cur
    r, z, n = res[:3]
    (h_prev,), (dh,) = prev, d
    dz, dn = blend_backward(dh, h_prev, z, n)
    if after:
      dr = sigmoid_backward(dn * res[3], r)  # n_pre = .. + r ⊙ hn
      dzh = (dr, dz, dn * r)  # hn's gradient is dn ⊙ r
      dh_prev = dh * z + mm_t_gates(dzh, w, cdt, acc)
      return (dh_prev,), (dr, dz, dn), dzh
    drh = mm_t(dn, w[2], cdt, acc)  # through (r ⊙ h) w_hn
    dr = sigmoid_backward(drh * h_prev, r)
    dh_prev = dh * z + drh * r + mm_t(dr, w[0], cdt, acc) + mm_t(dz, w[1], cdt, acc)
    dzx = (dr, dz, dn)
    return (dh_prev,), dzx, dzx

  def weight_grads(
    h_prev: Array, res: Array | None, dzh: Array, acc: Any
  ) -> tuple[Array, Array | None]:
    Hp = h_prev.shape[-1]
    if after:  # dw_h = H_prevᵀ dZh, db_hn = Σ dZh_n
      return tiles.outer_grads(h_prev, res, dzh, acc)[0], jnp.sum(dzh[:, 2 * Hp :], axis=0)
    assert res is not None
    rh = res[:, :Hp] * h_prev  # R ⊙ H_prev
    matmul = functools.partial(jnp.matmul, preferred_element_type=acc)
    return (
      jnp.concatenate(  # r, z blocks: H_prevᵀ dZ; n block: (R ⊙ H_prev)ᵀ dZn
        [matmul(h_prev.T, dzh[:, : 2 * Hp]), matmul(rh.T, dzh[:, 2 * Hp :])], axis=-1
      ),
      None,
    )

  return tiles.Rule(
    3,
    1,
    4 if after else 3,
    forward,
    backward,
    weight_grads,
    split=after,
    bias="b_hn" if after else None,
    ffi="gru" if after else None,  # the C++ kernel has the reset-after GRU only
  )


@base.memoized
def gru(
  hidden_size: int,
  reset: str = "before",
  *,
  input_init: inits.Initializer | None = None,
  recurrent_init: inits.Initializer | None = None,
  bias_init: inits.Initializer = inits.zeros,
  chrono_t_max: float | None = None,
  dtype: DType | None = None,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """A GRU cell.

  Args:
    hidden_size: H.
    reset: ``"before"`` (default, the lecture's ``(r ⊙ h) W``) or ``"after"``
      (PyTorch / flax / cuDNN ``r ⊙ (h W + b_hn)``).
    input_init: initialiser of ``w_x`` (default LeCun normal).
    recurrent_init: per-block initialiser of ``w_h`` (default orthogonal).
    bias_init: initialiser of ``b``.
    chrono_t_max: if set, chrono initialisation: ``b_z ~ log U[1, T_max-1]``
      so the update gate keeps the state for about T_max steps.
    dtype: compute dtype (default: the inputs' and params' result type).
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell`; its carry is ``h: [..., H]`` and its output ``y = h``.
    Its ``init`` raises a TypeError for a ``key`` that is not a PRNG key, and its
    ``initial_carry`` for a ``batch_shape`` that is not a tuple of ints. Equal
    arguments give the same (equal, hashable) cell.

  Raises:
    ValueError: ``hidden_size`` is not a positive int, or ``reset`` is
      neither ``"before"`` nor ``"after"``.

  Examples:
    >>> import jax, rnnjax as rj
    >>> cell = rj.gru(4, reset="after")
    >>> params = cell.init(jax.random.key(0), 3)
    >>> params.w_x.shape, params.w_h.shape, params.b.shape, params.b_hn.shape
    ((3, 12), (4, 12), (12,), (4,))
  """
  what = "rnnjax.gru"
  arguments.positive_int("hidden_size", hidden_size, what)
  arguments.choice("reset", reset, ("before", "after"), what)
  input_init = input_init or inits.lecun_normal()
  recurrent_init = inits.blockwise(recurrent_init or inits.orthogonal(), 3)
  H = hidden_size
  after = reset == "after"

  def init(key: Array, input_size: int) -> GRUParams:
    kx, kh, kb, kc = jax.random.split(key, 4)
    b = bias_init(kb, (3 * H,), param_dtype)
    if chrono_t_max is not None:
      b = b.at[H : 2 * H].set(inits.chrono_bias(kc, H, chrono_t_max, param_dtype))
    return GRUParams(
      w_x=input_init(kx, (input_size, 3 * H), param_dtype),
      w_h=recurrent_init(kh, (H, 3 * H), param_dtype),
      b=b,
      b_hn=jnp.zeros((H,), param_dtype) if after else None,
    )

  def initial_carry(batch_shape: tuple[int, ...] = (), dtype: DType = jnp.float32) -> Array:
    return jnp.zeros((*batch_shape, H), dtype)

  def _gates(
    params: GRUParams, h: Array, zx: Array, cdt: DType, acc: DType
  ) -> tuple[Array, Array, Array, Array | None]:
    """r, z, n and the n-block recurrent term, given zx = x w_x + b."""
    w_h = params.w_h.astype(cdt)
    hc = h.astype(cdt)
    zx = zx.astype(acc)
    if after:
      zh = base.mm(hc, w_h, acc)  # [B, 3H]
      # one σ over the [..., 2H] (r|z) block
      rz = jax.nn.sigmoid(zx[..., : 2 * H] + zh[..., : 2 * H])
      r, z = rz[..., :H], rz[..., H:]
      hn = zh[..., 2 * H :] + base.bias(cast(Array, params.b_hn), zh, acc)  # h w_hn + b_hn
      n = jnp.tanh(zx[..., 2 * H :] + r * hn)
    else:
      rz = jax.nn.sigmoid(zx[..., : 2 * H] + base.mm(hc, w_h[:, : 2 * H], acc))  # [B, 2H]
      r, z = rz[..., :H], rz[..., H:]
      hn = None
      n = jnp.tanh(zx[..., 2 * H :] + base.mm((r * h).astype(cdt), w_h[:, 2 * H :], acc))
    return r, z, n, hn

  project = base.affine_projection(dtype)

  def forward(params: GRUParams, h: Array, zx: Array) -> tuple[Array, Array, Residuals]:
    cdt, acc = base.compute_dtypes(dtype, h, params.w_h)
    r, z, n, hn = _gates(params, h, zx, cdt, acc)
    h_new = blend(h, z, n).astype(cdt)
    res = (r.astype(cdt), z.astype(cdt), n.astype(cdt), None if hn is None else hn.astype(cdt))
    return h_new, h_new, res

  step = base.step_from(project, forward)

  def backward(
    params: GRUParams, h_prev: Array, h: Array, res: Residuals, dcarry: Array, dy: Array
  ) -> tuple[Array, Array, Array]:
    del h
    r, z, n, hn = res
    dh = dcarry + dy  # y = h
    w_h = params.w_h.T.astype(dh.dtype)  # [3H, H]
    dz, dn = blend_backward(dh, h_prev, z, n)
    if after:
      dr = sigmoid_backward(dn * cast(Array, hn), r)  # n_pre = .. + r ⊙ hn
      dzh = jnp.concatenate([dr, dz, dn * r], axis=-1)  # hn's grad is dn ⊙ r
      dh_prev = dh * z + dzh @ w_h  # dh_{t-1}
      dzx = jnp.concatenate([dr, dz, dn], axis=-1)
    else:
      drh = dn @ w_h[2 * H :]  # through (r ⊙ h) w_hn
      dr = sigmoid_backward(drh * h_prev, r)
      drz = jnp.concatenate([dr, dz], axis=-1)
      dh_prev = dh * z + drh * r + drz @ w_h[: 2 * H]
      dzx = jnp.concatenate([drz, dn], axis=-1)
      dzh = dzx
    return dh_prev, dzx, dzh

  def recurrent_grads(
    params: GRUParams, h_prev: Array, res: Residuals, dzh: Array
  ) -> dict[str, Array]:
    del params
    if after:
      return {
        "w_h": h_prev.T @ dzh,  # dw_h = H_prevᵀ dZh
        "b_hn": jnp.sum(dzh[:, 2 * H :], axis=0),
      }
    r = res[0]
    return {
      "w_h": jnp.concatenate(
        [
          h_prev.T @ dzh[:, : 2 * H],  # r, z blocks: H_prevᵀ dZ
          (r * h_prev).T @ dzh[:, 2 * H :],
        ],
        axis=-1,
      )
    }  # n block: (R ⊙ H_prev)ᵀ dZn

  def state_jacobian(params: GRUParams, h: Array, x: Array) -> Array:
    cdt, acc = base.compute_dtypes(dtype, h, params.w_h)
    r, z, n, hn = _gates(params, h, project(params, x), cdt, acc)
    w_r, w_z, w_n = (params.w_h[:, k * H : (k + 1) * H].T for k in range(3))
    dr = (r * (1 - r))[:, None] * w_r  # ∂r/∂h
    dz = (z * (1 - z))[:, None] * w_z  # ∂z/∂h
    dn_pre = (
      cast(Array, hn)[:, None] * dr + r[:, None] * w_n  # ∂(r ⊙ (h w_hn + b_hn))/∂h
      if after
      else w_n @ (jnp.diag(r) + h[:, None] * dr)  # ∂((r ⊙ h) w_hn)/∂h
    )
    dn = (1 - n * n)[:, None] * dn_pre
    return jnp.diag(z) + (h - n)[:, None] * dz + (1 - z)[:, None] * dn

  def state_diagonal(params: GRUParams, h: Array, x: Array) -> Array:
    cdt, acc = base.compute_dtypes(dtype, h, params.w_h)
    r, z, n, hn = _gates(params, h, project(params, x), cdt, acc)
    w_hr, w_hz, w_hn = (params.w_h[:, k * H : (k + 1) * H] for k in range(3))
    dr = r * (1 - r) * jnp.diagonal(w_hr)  # ∂r_i/∂h_i
    dz = z * (1 - z) * jnp.diagonal(w_hz)  # ∂z_i/∂h_i
    if after:  # n_pre = .. + r ⊙ (h w_hn + b_hn)
      dn_pre = cast(Array, hn) * dr + r * jnp.diagonal(w_hn)
    else:  # n_pre = .. + (r ⊙ h) w_hn: Σ_k h_k r_k(1 − r_k) w_hr[i, k] w_hn[k, i] too
      dn_pre = r * jnp.diagonal(w_hn) + (h * r * (1 - r)) @ (w_hr.T * w_hn)
    dn = (1 - n * n) * dn_pre
    return z + (h - n) * dz + (1 - z) * dn  # h_t = z ⊙ h + (1 − z) ⊙ n

  return build(
    init,
    step,
    initial_carry,
    name="gru",
    output_size=H,
    what=what,
    fast=BackwardRows(forward, backward, recurrent_grads, project, rows_are_dzx=not after),
    jacobian=ClosedJacobian(state_jacobian),
    diagonal=ClosedDiagonal(state_diagonal),
    options=(("reset", reset),),
    dtype=dtype,
    activation=None,
    recurrent_weight="w_h",
    input_weight="w_x",
    pallas=pallas_rule(after),
    gates=3,
  )
