"""Long short-term memory, gate blocks in the order (i, f, g, o).

Row-vector layout, ``w_x: [I, 4H]``, ``w_h: [H, 4H]``, one bias ``b: [4H]``:

    [i|f|g|o]_pre = x_t w_x + h_{t-1} w_h + b               # [B, 4H]
    i, f, o = σ(i_pre), σ(f_pre), σ(o_pre);  g = tanh(g_pre)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

The carry is ``LSTMCarry(h, c)`` (flax orders its tuple ``(c, h)``). PyTorch's
``nn.LSTM`` (same gate order) maps as ``w_x = weight_ih_l0.T``,
``w_h = weight_hh_l0.T``, ``b = bias_ih_l0 + bias_hh_l0``.

Backward of one step:

    do = dh_t ⊙ tanh(c_t) ⊙ o(1 − o)
    dc = dc_t + dh_t ⊙ o ⊙ (1 − tanh²(c_t))               # through h = o tanh(c)
    di = dc ⊙ g ⊙ i(1 − i);  df = dc ⊙ c_{t-1} ⊙ f(1 − f);  dg = dc ⊙ i ⊙ (1 − g²)
    dc_{t-1} = dc ⊙ f
    dh_{t-1} = [di|df|dg|do] w_hᵀ

The state Jacobian is taken over ``s = [h; c]`` (S = 2H).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import arguments
from rnnjax._src import init as inits
from rnnjax._src.cells import base, tiles
from rnnjax._src.custom import build
from rnnjax._src.hints import BackwardRows, ClosedDiagonal, ClosedJacobian
from rnnjax._src.typing import Array, DType


def pointwise(
  gate: Callable[[int], Array], c_prev: Array
) -> tuple[Array, Array, tuple[Array, Array, Array, Array]]:
  """The step after the matmuls: ``(h_t, c_t, (i, f, g, o))``, in the accumulation
  dtype, from ``gate(k)``, the pre-activation of gate block k (a slice of
  ``z: [B, 4H]`` on the XLA path, a ``[Bb, Hp]`` tile in the Pallas kernel)."""
  i = jax.nn.sigmoid(gate(0))
  f = jax.nn.sigmoid(gate(1))
  g = jnp.tanh(gate(2))
  o = jax.nn.sigmoid(gate(3))
  c = f * c_prev + i * g  # c_t = f ⊙ c_{t-1} + i ⊙ g
  h = o * jnp.tanh(c)  # h_t = o ⊙ tanh(c_t)
  return h, c, (i, f, g, o)


def pointwise_backward(
  gates: tuple[Array, ...], c_prev: Array, c: Array, dh: Array, dc: Array
) -> tuple[tuple[Array, Array, Array, Array], Array]:
  """`pointwise`'s backward: the gate pre-activations' gradients ``(di, df, dg, do)``
  and ``dc``, the gradient reaching ``c_t`` (``dc_{t-1} = dc ⊙ f``), from ``dh``
  (``h``'s cotangent, the output's included) and ``dc`` (``c_t``'s from later)."""
  i, f, g, o = gates
  tc = jnp.tanh(c)
  do = dh * tc * o * (1.0 - o)  # h = o tanh(c), σ'
  dc = dc + dh * o * (1.0 - tc * tc)  # through tanh(c)
  di = dc * g * i * (1.0 - i)  # c = f c_prev + i g
  df = dc * c_prev * f * (1.0 - f)
  dg = dc * i * (1.0 - g * g)
  return (di, df, dg, do), dc


def _tile_forward(
  w: tiles.Blocks, b_hn: Array, carry: tiles.Blocks, zx: tiles.Blocks, cdt: Any, acc: Any
) -> tuple[tiles.Blocks, tiles.Blocks]:
  del b_hn
  h, c = carry
  z = [zx[k] + tiles.mm(h, w[k], cdt, acc) for k in range(4)]  # [i|f|g|o]_pre
  h, c, gates = pointwise(lambda k: z[k], c)
  return (h.astype(cdt), c.astype(cdt)), gates


def _tile_backward(
  w: tiles.Blocks,
  b_hn: Array,
  prev: tiles.Blocks,
  cur: tiles.Blocks,
  res: tiles.Blocks,
  d: tiles.Blocks,
  cdt: Any,
  acc: Any,
) -> tuple[tiles.Blocks, tiles.Blocks, tiles.Blocks]:
  del b_hn
  dz, dc = pointwise_backward(tuple(res), prev[1], cur[1], d[0], d[1])
  dh_prev = tiles.mm_t_gates(dz, w, cdt, acc)  # dh_{t-1} = dz w_hᵀ
  return (dh_prev, dc * res[1]), dz, dz  # dc_{t-1} = dc ⊙ f


PALLAS = tiles.Rule(4, 2, 4, _tile_forward, _tile_backward, tiles.outer_grads, ffi="lstm")
"""The LSTM's step on the Pallas kernel's tiles."""


class LSTMParams(NamedTuple):
  """The params of `rnnjax.lstm`, gate blocks in the order (i, f, g, o).

  Attributes:
    w_x: ``[I, 4H]``, the input weights of the four blocks side by side.
    w_h: ``[H, 4H]``, the recurrent weights.
    b: ``[4H]``, one bias (PyTorch's ``b_ih + b_hh``).
  """

  w_x: Array  # [I, 4H]  blocks (i, f, g, o)
  w_h: Array  # [H, 4H]  blocks (i, f, g, o)
  b: Array  # [4H]     PyTorch's b_ih + b_hh


class LSTMCarry(NamedTuple):
  """The LSTM's carry; flattened for the Jacobian tools as ``s = [h; c]`` (S = 2H).

  Attributes:
    h: ``[..., H]``, the hidden state (and the output).
    c: ``[..., H]``, the cell state.
  """

  h: Array  # [..., H]
  c: Array  # [..., H]


@base.memoized
def lstm(
  hidden_size: int,
  *,
  forget_bias: float = 1.0,
  chrono_t_max: float | None = None,
  input_init: inits.Initializer | None = None,
  recurrent_init: inits.Initializer | None = None,
  bias_init: inits.Initializer = inits.zeros,
  dtype: DType | None = None,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """An LSTM cell.

  Args:
    hidden_size: H.
    forget_bias: added to the forget-gate bias at init (default 1,
      Gers et al. 2000; Jozefowicz et al. 2015).
    chrono_t_max: if set, chrono initialisation (Tallec & Ollivier 2018):
      ``b_f ~ log U[1, T_max-1]``, ``b_i = -b_f`` (replaces forget_bias).
    input_init: initialiser of ``w_x`` (default LeCun normal).
    recurrent_init: per-block initialiser of ``w_h`` (default orthogonal).
    bias_init: initialiser of ``b`` before the forget bias is added.
    dtype: compute dtype (default: the inputs' and params' result type).
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell`; its carry is ``LSTMCarry(h, c)`` (each ``[..., H]``) and
    its output ``y = h``.
    Its ``init`` raises a TypeError for a ``key`` that is not a PRNG key, and its
    ``initial_carry`` for a ``batch_shape`` that is not a tuple of ints. Equal
    arguments give the same (equal, hashable) cell.

  Raises:
    ValueError: ``hidden_size`` is not a positive int.

  Examples:
    >>> import jax, rnnjax as rj
    >>> cell = rj.lstm(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> [float(v) for v in params.b[4:8]]       # forget-gate bias 1
    [1.0, 1.0, 1.0, 1.0]
  """
  what = "rnnjax.lstm"
  arguments.positive_int("hidden_size", hidden_size, what)
  input_init = input_init or inits.lecun_normal()
  recurrent_init = inits.blockwise(recurrent_init or inits.orthogonal(), 4)
  H = hidden_size

  def init(key: Array, input_size: int) -> LSTMParams:
    kx, kh, kb, kc = jax.random.split(key, 4)
    b = bias_init(kb, (4 * H,), param_dtype)
    if chrono_t_max is not None:
      bf = inits.chrono_bias(kc, H, chrono_t_max, param_dtype)
      b = b.at[H : 2 * H].set(bf).at[:H].set(-bf)
    else:
      b = b.at[H : 2 * H].add(forget_bias)
    return LSTMParams(
      w_x=input_init(kx, (input_size, 4 * H), param_dtype),
      w_h=recurrent_init(kh, (H, 4 * H), param_dtype),
      b=b,
    )

  def initial_carry(batch_shape: tuple[int, ...] = (), dtype: DType = jnp.float32) -> LSTMCarry:
    zeros = jnp.zeros((*batch_shape, H), dtype)
    return LSTMCarry(zeros, zeros)

  def _cell(
    params: LSTMParams, carry: LSTMCarry, zx: Array, cdt: DType, acc: DType
  ) -> tuple[LSTMCarry, tuple[Array, Array, Array, Array]]:
    z = zx.astype(acc) + base.mm(carry.h.astype(cdt), params.w_h.astype(cdt), acc)
    h, c, gates = pointwise(lambda k: z[..., k * H : (k + 1) * H], carry.c)
    return LSTMCarry(h.astype(cdt), c.astype(cdt)), gates

  project = base.affine_projection(dtype)

  def forward(params: LSTMParams, carry: LSTMCarry, zx: Array) -> tuple[LSTMCarry, Array, Array]:
    cdt, acc = base.compute_dtypes(dtype, carry.h, params.w_h)
    carry, gates = _cell(params, carry, zx, cdt, acc)
    return carry, carry.h, jnp.concatenate(gates, axis=-1).astype(cdt)  # gates [B, 4H]

  def backward(
    params: LSTMParams, prev: LSTMCarry, carry: LSTMCarry, gates: Array, d: LSTMCarry, dy: Array
  ) -> tuple[LSTMCarry, Array, Array]:
    i, f, g, o = (gates[..., k * H : (k + 1) * H] for k in range(4))
    dh = d.h + dy  # y = h
    (di, df, dg, do), dc = pointwise_backward((i, f, g, o), prev.c, carry.c, dh, d.c)
    dz = jnp.concatenate([di, df, dg, do], axis=-1)  # [B, 4H]
    dh_prev = dz @ params.w_h.T.astype(dz.dtype)  # dh_{t-1} = dz w_hᵀ
    return LSTMCarry(dh_prev, dc * f), dz, dz  # dc_{t-1} = dc ⊙ f; dzh = dzx = dz

  def recurrent_grads(
    params: LSTMParams, prev: LSTMCarry, gates: Array, dzh: Array
  ) -> dict[str, Array]:
    del params, gates
    return {"w_h": prev.h.T @ dzh}  # dw_h = H_prevᵀ dZ

  def state_jacobian(params: LSTMParams, carry: LSTMCarry, x: Array) -> Array:
    cdt, acc = base.compute_dtypes(dtype, carry.h, params.w_h)
    new, (i, f, g, o) = _cell(params, carry, project(params, x), cdt, acc)
    w_i, w_f, w_g, w_o = (params.w_h[:, k * H : (k + 1) * H].T for k in range(4))
    tc = jnp.tanh(new.c)
    dc_dh = (
      (carry.c * f * (1 - f))[:, None] * w_f  # ∂c_t/∂h_{t-1}
      + (g * i * (1 - i))[:, None] * w_i
      + (i * (1 - g * g))[:, None] * w_g
    )
    dc_dc = jnp.diag(f)  # ∂c_t/∂c_{t-1}
    dh_dh = (tc * o * (1 - o))[:, None] * w_o + (o * (1 - tc * tc))[:, None] * dc_dh
    dh_dc = (o * (1 - tc * tc))[:, None] * dc_dc
    return jnp.block([[dh_dh, dh_dc], [dc_dh, dc_dc]])

  def state_diagonal(params: LSTMParams, carry: LSTMCarry, x: Array) -> Array:
    cdt, acc = base.compute_dtypes(dtype, carry.h, params.w_h)
    new, (i, f, g, o) = _cell(params, carry, project(params, x), cdt, acc)
    d_i, d_f, d_g, d_o = (jnp.diagonal(params.w_h[:, k * H : (k + 1) * H]) for k in range(4))
    tc = jnp.tanh(new.c)
    dc_dh = carry.c * f * (1 - f) * d_f + g * i * (1 - i) * d_i + i * (1 - g * g) * d_g
    dh_dh = tc * o * (1 - o) * d_o + o * (1 - tc * tc) * dc_dh  # ∂h_i/∂h_i
    return jnp.concatenate([dh_dh, f])  # [∂h_t/∂h_{t-1}; ∂c_t/∂c_{t-1}] diagonals

  options = (
    (("forget_bias", forget_bias),) if chrono_t_max is None else (("chrono_t_max", chrono_t_max),)
  )
  return build(
    init,
    base.step_from(project, forward),
    initial_carry,
    name="lstm",
    output_size=H,
    what=what,
    fast=BackwardRows(forward, backward, recurrent_grads, project, rows_are_dzx=True),
    jacobian=ClosedJacobian(state_jacobian),
    diagonal=ClosedDiagonal(state_diagonal),
    options=options,
    dtype=dtype,
    activation=None,
    recurrent_weight="w_h",
    input_weight="w_x",
    pallas=PALLAS,
    gates=4,
  )
