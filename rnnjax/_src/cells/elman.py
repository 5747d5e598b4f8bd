"""The vanilla (Elman) RNN: the lecture's ``h^t = f(V x^t + W h^{t-1} + b_h)``.

Row-vector layout (``x @ w_x``), so ``V = w_xᵀ`` and ``W = w_hᵀ``:

    z_t = x_t @ w_x + h_{t-1} @ w_h + b        # [B, H]
    h_t = f(z_t)                               # f = tanh | relu | sigmoid | linear

Params: ``w_x: [I, H]``, ``w_h: [H, H]``, ``b: [H]``. PyTorch's ``nn.RNN`` maps
as ``w_x = weight_ih_l0.T``, ``w_h = weight_hh_l0.T``, ``b = bias_ih_l0 + bias_hh_l0``.

Backward of one step (min-char-rnn style):

    dz_t = dh_t * f'(z_t)                      # backprop through f
    dh_{t-1} = dz_t @ w_hᵀ                     # through the recurrent matrix

State Jacobian (the lecture's "cause of all problems"), and its diagonal (quasi-DEER's):

    ∂h_t/∂h_{t-1} = diag(f'(z_t)) W = diag(f'(z_t)) w_hᵀ
    diag(∂h_t/∂h_{t-1}) = f'(z_t) ⊙ diag(w_h)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import arguments
from rnnjax._src import init as inits
from rnnjax._src.activations import ACTIVATIONS, Activation
from rnnjax._src.cells import base, tiles
from rnnjax._src.custom import build
from rnnjax._src.hints import BackwardRows, ClosedDiagonal, ClosedJacobian
from rnnjax._src.typing import Array, DType


class ElmanParams(NamedTuple):
  """The params of `rnnjax.elman`, in the row-vector layout.

  Attributes:
    w_x: ``[I, H]``, the lecture's ``Vᵀ``.
    w_h: ``[H, H]``, the lecture's ``Wᵀ``.
    b: ``[H]``, the lecture's ``b_h``.
  """

  w_x: Array  # [I, H]   the lecture's Vᵀ
  w_h: Array  # [H, H]   the lecture's Wᵀ
  b: Array  # [H]      b_h


@functools.lru_cache(maxsize=16)
def pallas_rule(act: Activation) -> tiles.Rule:
  """The Elman step on the Pallas kernel's tiles, ``h_t = f(zx_t + h_{t-1} w_h)``,
  with the activation's own ``f`` and ``f'`` as the XLA step and backward use."""

  def forward(
    w: tiles.Blocks, b_hn: Array, carry: tiles.Blocks, zx: tiles.Blocks, cdt: Any, acc: Any
  ) -> tuple[tiles.Blocks, tiles.Blocks]:
    del b_hn
    return (act.fn(zx[0] + tiles.mm(carry[0], w[0], cdt, acc)).astype(cdt),), ()

  def backward(
    w: tiles.Blocks,
    b_hn: Array,
    prev: tiles.Blocks,
    cur: tiles.Blocks,
    res: tiles.Blocks,
    d: tiles.Blocks,
    cdt: Any,
    acc: Any,
  ) -> tuple[tiles.Blocks, tiles.Blocks, tiles.Blocks]:
    del b_hn, prev, res
    dz = d[0] * act.grad_from_output(cur[0].astype(acc))  # backprop through f
    return (tiles.mm_t(dz, w[0], cdt, acc),), (dz,), (dz,)  # dh_{t-1} = dz w_hᵀ

  return tiles.Rule(1, 1, 0, forward, backward, tiles.outer_grads, ffi=f"elman-{act.name}")


@base.memoized
def elman(
  hidden_size: int,
  activation: str = "tanh",
  *,
  input_init: inits.Initializer | None = None,
  recurrent_init: inits.Initializer | None = None,
  bias_init: inits.Initializer = inits.zeros,
  dtype: DType | None = None,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """The vanilla RNN cell ``h_t = f(x_t @ w_x + h_{t-1} @ w_h + b)``.

  Args:
    hidden_size: H.
    activation: ``"tanh"`` (default), ``"relu"`` (IRNN with
      ``recurrent_init=rj.init.identity()``), ``"sigmoid"`` or ``"linear"``.
    input_init: initialiser of ``w_x`` (default LeCun normal, as flax).
    recurrent_init: initialiser of ``w_h`` (default orthogonal).
    bias_init: initialiser of ``b`` (default zeros).
    dtype: compute dtype (default: the inputs' and params' result type).
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell`; its carry is ``h: [..., H]`` and its output ``y = h``.
    Its ``init`` raises a TypeError for a ``key`` that is not a PRNG key, and its
    ``initial_carry`` for a ``batch_shape`` that is not a tuple of ints. Equal
    arguments give the same (equal, hashable) cell.

  Raises:
    ValueError: ``hidden_size`` is not a positive int, or ``activation`` is
      unknown.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.elman(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> h, y = cell.step(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> bool(jnp.allclose(h, jnp.tanh(jnp.ones((2, 3)) @ params.w_x)))
    True
  """
  what = "rnnjax.elman"
  arguments.positive_int("hidden_size", hidden_size, what)
  act = ACTIVATIONS[arguments.choice("activation", activation, ACTIVATIONS, what)]
  f, fprime = act.fn, act.grad_from_output
  input_init = input_init or inits.lecun_normal()
  recurrent_init = recurrent_init or inits.orthogonal()
  H = hidden_size

  def init(key: Array, input_size: int) -> ElmanParams:
    kx, kh, kb = jax.random.split(key, 3)
    return ElmanParams(
      w_x=input_init(kx, (input_size, H), param_dtype),
      w_h=recurrent_init(kh, (H, H), param_dtype),
      b=bias_init(kb, (H,), param_dtype),
    )

  def initial_carry(batch_shape: tuple[int, ...] = (), dtype: DType = jnp.float32) -> Array:
    return jnp.zeros((*batch_shape, H), dtype)

  project = base.affine_projection(dtype)

  def forward(params: ElmanParams, h: Array, zx: Array) -> tuple[Array, Array, None]:
    cdt, acc = base.compute_dtypes(dtype, h, params.w_h)
    z = zx.astype(acc) + base.mm(h.astype(cdt), params.w_h.astype(cdt), acc)
    h = f(z).astype(cdt)  # [B, H]
    return h, h, None

  step = base.step_from(project, forward)

  def backward(
    params: ElmanParams, h_prev: Array, h: Array, res: None, dcarry: Array, dy: Array
  ) -> tuple[Array, Array, Array]:
    del h_prev, res
    dz = (dcarry + dy) * fprime(h)  # y = h; backprop through f
    dh_prev = dz @ params.w_h.T.astype(dz.dtype)  # dh_{t-1} = dz_t W
    return dh_prev, dz, dz

  def recurrent_grads(
    params: ElmanParams, h_prev: Array, res: None, dzh: Array
  ) -> dict[str, Array]:
    del params, res
    return {"w_h": h_prev.T @ dzh}  # dw_h = H_prevᵀ dZ

  def state_jacobian(params: ElmanParams, h: Array, x: Array) -> Array:
    h_new, _ = step(params, h, x)
    return fprime(h_new)[:, None] * params.w_h.T  # diag(f'(z)) W

  def state_diagonal(params: ElmanParams, h: Array, x: Array) -> Array:
    h_new, _ = step(params, h, x)
    return fprime(h_new) * jnp.diagonal(params.w_h)  # f'(z) ⊙ diag(W)

  return build(
    init,
    step,
    initial_carry,
    name="elman",
    output_size=H,
    what=what,
    fast=BackwardRows(forward, backward, recurrent_grads, project, rows_are_dzx=True),
    jacobian=ClosedJacobian(state_jacobian),
    diagonal=ClosedDiagonal(state_diagonal),
    options=(("activation", activation),),
    dtype=dtype,
    activation=act,
    recurrent_weight="w_h",
    input_weight="w_x",
    pallas=pallas_rule(act),
    gates=1,
  )
