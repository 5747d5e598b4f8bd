"""Cells researchers ask for, each written as a user would: a factory returning
`rnnjax.custom_cell` (``init``, ``step``, ``initial_carry`` and nothing more).

Every cell here gets `rnnjax.scan` (lengths, reverse, all backward modes; the
hand-written BPTT's local backward is ``jax.vjp`` of the step), the layers and
the Jacobian tools (``jax.jacfwd`` of the step) from the protocol alone.

Notation (the lecture's, row-vector layout ``x @ W``): ``x_t: [B, I]``,
``h_t: [B, H]``; ``σ`` the logistic sigmoid, ``⊙`` the elementwise product;
``w_x: [I, kH]`` and ``w_h: [H, kH]`` hold ``k`` gate blocks side by side, in
the order each docstring names. Biases are added as ``b.reshape(1, ..., n)``,
so nothing relies on NumPy rank promotion, and every step also takes one
unbatched example (``x: [I]``, carry leaves ``[H]``), as the Jacobian tools
call it.

* `mgu`: minimal gated unit (Zhou et al. 2016), flax's ``MGUCell``.
* `indrnn`: independently recurrent network (Li et al. 2018).
* `peephole_lstm`: LSTM with peepholes (Gers & Schmidhuber 2000).
* `cifg_lstm`: coupled input-forget gate LSTM (Greff et al. 2017).
  The paper's other variants are `rnnjax.greff_lstm` (``cells/greff.py``).
* `layer_norm_lstm`, `layer_norm_gru`: layer normalisation inside the
  recurrence (Ba, Kiros & Hinton 2016).
* `orthogonal_rnn`: ``W = expm(A − Aᵀ)`` (Lezcano-Casado & Martínez-Rubio 2019).
* `lstm_projected`: the LSTM with a projected hidden state, PyTorch's
  ``nn.LSTM(proj_size=P)`` (Sak, Senior & Beaufays 2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg

from rnnjax._src import arguments
from rnnjax._src import init as inits
from rnnjax._src.activations import ACTIVATIONS
from rnnjax._src.cells import base
from rnnjax._src.cells.lstm import LSTMCarry
from rnnjax._src.custom import build
from rnnjax._src.typing import Array, DType

__all__ = [
  "CIFGParams",
  "IndRNNParams",
  "LSTMProjectedParams",
  "LayerNormGRUParams",
  "LayerNormLSTMParams",
  "MGUParams",
  "OrthogonalRNNParams",
  "PeepholeLSTMParams",
  "cifg_lstm",
  "indrnn",
  "layer_norm_gru",
  "layer_norm_lstm",
  "lstm_projected",
  "mgu",
  "orthogonal_rnn",
  "peephole_lstm",
]

# ----------------------------------------------------------------- helpers


def _block(z: Array, k: int, H: int) -> Array:
  """The ``k``-th ``[..., H]`` gate block of ``z: [..., nH]``."""
  return z[..., k * H : (k + 1) * H]


def _layer_norm(z: Array, gain: Array, bias: Array | None, eps: float) -> Array:
  """``LN(z; g, β) = g ⊙ (z − μ) / sqrt(v + ε) + β`` over the last axis, with
  ``μ`` and ``v`` the mean and (biased) variance of the features of each row."""
  mu = jnp.mean(z, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(z - mu), axis=-1, keepdims=True)
  out = (z - mu) * jax.lax.rsqrt(var + eps) * base.row(gain, z)
  return out if bias is None else out + base.row(bias, z)


def _lstm_zeros(H: int, P: int | None = None) -> Callable[..., LSTMCarry]:
  """``initial_carry`` of an LSTM-like cell: ``LSTMCarry(h: [..., P], c: [..., H])``
  (`rnnjax.custom_cell` checks the ``batch_shape``)."""

  def initial_carry(batch_shape: tuple[int, ...] = (), dtype: DType = jnp.float32) -> LSTMCarry:
    return LSTMCarry(
      jnp.zeros((*batch_shape, H if P is None else P), dtype), jnp.zeros((*batch_shape, H), dtype)
    )

  return initial_carry


def _activation(name: str, what: str) -> Callable[[Array], Array]:
  arguments.choice("activation", name, ACTIVATIONS, what)
  return ACTIVATIONS[name].fn


def _forget_bias(H: int, blocks: int, k: int, value: float, dtype: DType) -> Array:
  """A ``[blocks·H]`` bias, zero but for ``value`` on block ``k``."""
  return jnp.zeros((blocks * H,), dtype).at[k * H : (k + 1) * H].set(value)


# ----------------------------------------------------------------- MGU


class MGUParams(NamedTuple):
  """The params of `rnnjax.mgu`, gate blocks in the order (f, n).

  Attributes:
    w_x: ``[I, 2H]``, flax's ``if`` and ``in`` kernels side by side.
    w_h: ``[H, 2H]``, flax's ``hf`` and ``hn`` kernels.
    b: ``[2H]``, flax's ``if`` and ``in`` biases.
    b_hn: ``[H]``, flax's ``hn`` bias, inside the reset.
  """

  w_x: Array  # [I, 2H]  blocks (f, n)
  w_h: Array  # [H, 2H]  blocks (f, n)
  b: Array  # [2H]
  b_hn: Array  # [H]


@base.memoized
def mgu(hidden_size: int, *, param_dtype: DType = jnp.float32) -> base.Cell:
  """The minimal gated unit (Zhou, Wu, Zhang & Zhou 2016), as flax's ``MGUCell``.

  One gate ``f`` both resets the candidate and interpolates (flax's form, with
  the reset after ``w_hn`` as in cuDNN's GRU)::

      f_t = σ(x_t w_xf + h_{t-1} w_hf + b_f)
      n_t = tanh(x_t w_xn + b_n + f_t ⊙ (h_{t-1} w_hn + b_hn))
      h_t = (1 − f_t) ⊙ n_t + f_t ⊙ h_{t-1}

  Zhou et al. write the reset before the matmul, ``tanh(x_t w_xn + (f_t ⊙
  h_{t-1}) w_hn + b_n)``, and ``h_t = (1 − f_t) ⊙ h_{t-1} + f_t ⊙ n_t``; this
  cell follows flax (the tested reference). flax's params map as
  ``w_x = [if.kernel | in.kernel]``, ``w_h = [hf.kernel | hn.kernel]``,
  ``b = [if.bias | in.bias]``, ``b_hn = hn.bias``.

  Args:
    hidden_size: H.
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params `MGUParams` and
    carry ``h: [..., H]``; init as flax: LeCun-normal input kernels,
    orthogonal recurrent blocks, forget bias 1, other biases 0.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.mgu(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    >>> ys.shape, cell
    ((5, 2, 4), rnnjax.mgu(4))
  """
  what = "rnnjax.mgu"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  recurrent_init = inits.blockwise(inits.orthogonal(), 2)

  def init(key: Array, input_size: int) -> MGUParams:
    kx, kh = jax.random.split(key)
    return MGUParams(
      w_x=inits.lecun_normal()(kx, (input_size, 2 * H), param_dtype),
      w_h=recurrent_init(kh, (H, 2 * H), param_dtype),
      b=_forget_bias(H, 2, 0, 1.0, param_dtype),
      b_hn=jnp.zeros((H,), param_dtype),
    )

  def step(params: MGUParams, h: Array, x: Array) -> tuple[Array, Array]:
    zx = base.affine(x, params.w_x, params.b)  # [..., 2H]
    zh = h @ params.w_h  # [..., 2H]
    f = jax.nn.sigmoid(_block(zx, 0, H) + _block(zh, 0, H))
    n = jnp.tanh(_block(zx, 1, H) + f * (_block(zh, 1, H) + base.row(params.b_hn, h)))
    new = ((1.0 - f) * n + f * h).astype(h.dtype)
    return new, new

  return build(init, step, base.zeros_carry(H), name="mgu", what=what, input_weight="w_x")


# ----------------------------------------------------------------- IndRNN


class IndRNNParams(NamedTuple):
  """The params of `rnnjax.indrnn`.

  Attributes:
    w_x: ``[I, H]``, the input weights ``W``.
    u: ``[H]``, the recurrent weights, one per unit.
    b: ``[H]``, the bias.
  """

  w_x: Array  # [I, H]
  u: Array  # [H]
  b: Array  # [H]


@base.memoized
def indrnn(
  hidden_size: int,
  activation: str = "relu",
  recurrent_max: float | None = None,
  *,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """The independently recurrent neural network (Li, Li, Cook, Zhu & Gao 2018).

  Each unit sees only its own past, through one recurrent weight ``u_j``::

      h_t = σ(x_t W + u ⊙ h_{t-1} + b)

  so ``∂h_t/∂h_{t-1} = diag(σ'(z_t) ⊙ u)`` and a gradient over ``T`` steps is
  scaled by ``∏_t σ'(z_t) u``, unit by unit. The paper bounds it by bounding
  the recurrent weights, ``|u_j| ≤ recurrent_max``; for ReLU over ``T`` steps
  it recommends ``recurrent_max = 2 ** (1 / T)``, so that ``|u_j|^T ≤ 2``.

  With ``recurrent_max`` set, the bound is held in two places:

  * ``init`` draws ``u ~ U[0, min(1, recurrent_max)]`` (else ``U[0, 1]``);
  * the step uses ``clip(u, −recurrent_max, recurrent_max)``, as the
    TensorFlow ``IndRNNCell`` (batzner/indrnn) does, so the bound holds
    whatever an optimiser does to the stored ``u`` (its gradient is zero
    where ``|u_j|`` exceeds the bound). To keep the stored weights inside
    the bound too (projected gradient descent), clip after each update:
    ``params = params._replace(u=jnp.clip(params.u, -m, m))``.

  Args:
    hidden_size: H.
    activation: ``σ``: ``"relu"`` (the paper's), ``"tanh"``, ``"sigmoid"``
      or ``"linear"``.
    recurrent_max: the bound on ``|u_j|`` (a positive number), or None.
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params `IndRNNParams`
    and carry ``h: [..., H]``.

  Raises:
    ValueError: an unknown activation or a ``recurrent_max`` that is not a
      positive number.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.indrnn(4, recurrent_max=2 ** (1 / 100))   # T = 100 steps
    >>> params = cell.init(jax.random.key(0), 3)
    >>> bool(jnp.all(jnp.abs(params.u) <= 2 ** (1 / 100)))
    True
  """
  what = "rnnjax.indrnn"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  fn = _activation(activation, what)
  if recurrent_max is not None and (
    isinstance(recurrent_max, bool)
    or not isinstance(recurrent_max, (int, float))
    or not recurrent_max > 0
    or not math.isfinite(recurrent_max)
  ):
    raise ValueError(
      f"{what}: recurrent_max must be a positive number or None, got {recurrent_max!r}"
    )
  bound = None if recurrent_max is None else float(recurrent_max)

  def init(key: Array, input_size: int) -> IndRNNParams:
    kx, ku = jax.random.split(key)
    high = 1.0 if bound is None else min(1.0, bound)
    return IndRNNParams(
      w_x=inits.lecun_normal()(kx, (input_size, H), param_dtype),
      u=jax.random.uniform(ku, (H,), param_dtype, 0.0, high),
      b=jnp.zeros((H,), param_dtype),
    )

  def step(params: IndRNNParams, h: Array, x: Array) -> tuple[Array, Array]:
    u = params.u if bound is None else jnp.clip(params.u, -bound, bound)
    new = fn(base.affine(x, params.w_x, params.b) + base.row(u, h) * h).astype(h.dtype)
    return new, new

  cell = build(init, step, base.zeros_carry(H), name="indrnn", what=what, input_weight="w_x")
  return cell._replace(options=(("activation", activation), ("recurrent_max", recurrent_max)))


# ----------------------------------------------------------------- LSTM variants


class PeepholeLSTMParams(NamedTuple):
  """The params of `rnnjax.peephole_lstm`, gate blocks in the order (i, f, g, o).

  Attributes:
    w_x: ``[I, 4H]``, the input weights.
    w_h: ``[H, 4H]``, the recurrent weights.
    b: ``[4H]``, the bias.
    w_c: ``[3H]``, the diagonal peephole weights ``p_i, p_f, p_o`` side by side.
  """

  w_x: Array  # [I, 4H]  blocks (i, f, g, o)
  w_h: Array  # [H, 4H]
  b: Array  # [4H]
  w_c: Array  # [3H]     blocks (i, f, o)


@base.memoized
def peephole_lstm(
  hidden_size: int, *, forget_bias: float = 1.0, param_dtype: DType = jnp.float32
) -> base.Cell:
  """The LSTM with peephole connections (Gers & Schmidhuber 2000).

  The gates see the cell state through diagonal weights ``p``: the input and
  forget gates the previous one, the output gate the new one (Gers,
  Schraudolph & Schmidhuber 2002; the "vanilla" LSTM of Greff et al. 2017)::

      i_t = σ(x_t w_xi + h_{t-1} w_hi + p_i ⊙ c_{t-1} + b_i)
      f_t = σ(x_t w_xf + h_{t-1} w_hf + p_f ⊙ c_{t-1} + b_f)
      g_t = tanh(x_t w_xg + h_{t-1} w_hg + b_g)
      c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
      o_t = σ(x_t w_xo + h_{t-1} w_ho + p_o ⊙ c_t + b_o)
      h_t = o_t ⊙ tanh(c_t)

  With ``p = 0`` it is `rnnjax.lstm` with the same ``w_x, w_h, b``.

  Args:
    hidden_size: H.
    forget_bias: added to ``b_f`` at init (as `rnnjax.lstm`).
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params
    `PeepholeLSTMParams` and carry ``rnnjax.LSTMCarry(h, c)``. Init as
    `rnnjax.lstm`, with the peepholes at zero (it starts as the plain LSTM;
    their gradient ``∂L/∂p_i = Σ δi ⊙ c_{t-1}`` is not zero, so they learn).

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.peephole_lstm(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    >>> carry.c.shape, params.w_c.shape
    ((2, 4), (12,))
  """
  what = "rnnjax.peephole_lstm"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  recurrent_init = inits.blockwise(inits.orthogonal(), 4)

  def init(key: Array, input_size: int) -> PeepholeLSTMParams:
    kx, kh = jax.random.split(key)
    return PeepholeLSTMParams(
      w_x=inits.lecun_normal()(kx, (input_size, 4 * H), param_dtype),
      w_h=recurrent_init(kh, (H, 4 * H), param_dtype),
      b=_forget_bias(H, 4, 1, forget_bias, param_dtype),
      w_c=jnp.zeros((3 * H,), param_dtype),
    )

  def step(params: PeepholeLSTMParams, carry: LSTMCarry, x: Array) -> tuple[LSTMCarry, Array]:
    h, c = carry
    z = base.affine(x, params.w_x, params.b) + h @ params.w_h  # [..., 4H]
    p_i, p_f, p_o = (base.row(_block(params.w_c, k, H), c) for k in range(3))
    i = jax.nn.sigmoid(_block(z, 0, H) + p_i * c)
    f = jax.nn.sigmoid(_block(z, 1, H) + p_f * c)
    g = jnp.tanh(_block(z, 2, H))
    c_new = f * c + i * g
    o = jax.nn.sigmoid(_block(z, 3, H) + p_o * c_new)
    h_new = (o * jnp.tanh(c_new)).astype(h.dtype)
    return LSTMCarry(h_new, c_new.astype(c.dtype)), h_new

  cell = build(
    init, step, _lstm_zeros(H), name="peephole_lstm", what=what, input_weight="w_x", output_size=H
  )
  return cell._replace(options=(("forget_bias", forget_bias),))


class CIFGParams(NamedTuple):
  """The params of `rnnjax.cifg_lstm`, gate blocks in the order (f, g, o).

  Attributes:
    w_x: ``[I, 3H]``, the input weights.
    w_h: ``[H, 3H]``, the recurrent weights.
    b: ``[3H]``, the bias.
  """

  w_x: Array  # [I, 3H]  blocks (f, g, o)
  w_h: Array  # [H, 3H]
  b: Array  # [3H]


@base.memoized
def cifg_lstm(
  hidden_size: int, *, forget_bias: float = 1.0, param_dtype: DType = jnp.float32
) -> base.Cell:
  """The coupled input-forget gate LSTM (CIFG; Greff et al. 2017).

  One gate decides both what to forget and what to write, ``i_t = 1 − f_t``,
  which saves a quarter of the weights and, in Greff et al.'s study, loses
  nothing measurable::

      f_t = σ(x_t w_xf + h_{t-1} w_hf + b_f)
      g_t = tanh(x_t w_xg + h_{t-1} w_hg + b_g)
      o_t = σ(x_t w_xo + h_{t-1} w_ho + b_o)
      c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ g_t
      h_t = o_t ⊙ tanh(c_t)

  Greff et al. couple the gates of their peephole LSTM; this is the coupled
  form of `rnnjax.lstm`, without peepholes (as Keras-style CIFG cells default).

  Args:
    hidden_size: H.
    forget_bias: added to ``b_f`` at init.
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params `CIFGParams` and
    carry ``rnnjax.LSTMCarry(h, c)``.

  Examples:
    >>> import jax, rnnjax as rj
    >>> rj.cifg_lstm(4).init(jax.random.key(0), 3).w_h.shape   # three blocks
    (4, 12)
  """
  what = "rnnjax.cifg_lstm"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  recurrent_init = inits.blockwise(inits.orthogonal(), 3)

  def init(key: Array, input_size: int) -> CIFGParams:
    kx, kh = jax.random.split(key)
    return CIFGParams(
      w_x=inits.lecun_normal()(kx, (input_size, 3 * H), param_dtype),
      w_h=recurrent_init(kh, (H, 3 * H), param_dtype),
      b=_forget_bias(H, 3, 0, forget_bias, param_dtype),
    )

  def step(params: CIFGParams, carry: LSTMCarry, x: Array) -> tuple[LSTMCarry, Array]:
    h, c = carry
    z = base.affine(x, params.w_x, params.b) + h @ params.w_h  # [..., 3H]
    f = jax.nn.sigmoid(_block(z, 0, H))
    g = jnp.tanh(_block(z, 1, H))
    o = jax.nn.sigmoid(_block(z, 2, H))
    c_new = f * c + (1.0 - f) * g
    h_new = (o * jnp.tanh(c_new)).astype(h.dtype)
    return LSTMCarry(h_new, c_new.astype(c.dtype)), h_new

  cell = build(
    init, step, _lstm_zeros(H), name="cifg_lstm", what=what, input_weight="w_x", output_size=H
  )
  return cell._replace(options=(("forget_bias", forget_bias),))


class LSTMProjectedParams(NamedTuple):
  """The params of `rnnjax.lstm_projected`, gate blocks in the order (i, f, g, o).

  Attributes:
    w_x: ``[I, 4H]``, PyTorch's ``weight_ih_l0.T``.
    w_h: ``[P, 4H]``, PyTorch's ``weight_hh_l0.T`` (it reads the projected h).
    b: ``[4H]``, PyTorch's ``bias_ih_l0 + bias_hh_l0``.
    w_r: ``[H, P]``, the projection, PyTorch's ``weight_hr_l0.T``.
  """

  w_x: Array  # [I, 4H]  blocks (i, f, g, o)
  w_h: Array  # [P, 4H]
  b: Array  # [4H]
  w_r: Array  # [H, P]


@base.memoized
def lstm_projected(
  hidden_size: int,
  proj_size: int,
  *,
  forget_bias: float = 1.0,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """The LSTM with a projected hidden state (LSTMP; Sak, Senior & Beaufays
  2014), PyTorch's ``nn.LSTM(hidden_size=H, proj_size=P)``.

  The cell state keeps ``H`` units; the hidden state, the output and what
  the gates read back are ``P`` units, ``h_t = (o_t ⊙ tanh c_t) w_r``::

      [i|f|g|o] = x_t w_x + h_{t-1} w_h + b            # h_{t-1}: [B, P]
      i, f, o = σ(·);  g = tanh(·)
      c_t = f ⊙ c_{t-1} + i ⊙ g                        # [B, H]
      h_t = (o ⊙ tanh(c_t)) w_r                         # [B, P]

  PyTorch's weights map as ``w_x = weight_ih_l0.T``, ``w_h = weight_hh_l0.T``,
  ``b = bias_ih_l0 + bias_hh_l0``, ``w_r = weight_hr_l0.T`` (PyTorch asks
  ``P < H``; any positive ``P`` works here).

  Args:
    hidden_size: H, the cell state's size.
    proj_size: P, the hidden state's and the output's size.
    forget_bias: added to ``b_f`` at init.
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params
    `LSTMProjectedParams`, carry ``rnnjax.LSTMCarry(h: [..., P], c: [..., H])``
    and outputs ``y = h: [..., P]``: ``cell.hidden_size`` is P, what a next
    layer sees (the repr reads ``rnnjax.lstm_projected(P, cell_size=H, ...)``).

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.lstm_projected(6, 2)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 4, 3)))
    >>> ys.shape, carry.h.shape, carry.c.shape
    ((5, 4, 2), (4, 2), (4, 6))
  """
  what = "rnnjax.lstm_projected"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  P = arguments.positive_int("proj_size", proj_size, what)
  recurrent_init = inits.blockwise(inits.orthogonal(), 4)

  def init(key: Array, input_size: int) -> LSTMProjectedParams:
    kx, kh, kr = jax.random.split(key, 3)
    return LSTMProjectedParams(
      w_x=inits.lecun_normal()(kx, (input_size, 4 * H), param_dtype),
      w_h=recurrent_init(kh, (P, 4 * H), param_dtype),
      b=_forget_bias(H, 4, 1, forget_bias, param_dtype),
      w_r=inits.lecun_normal()(kr, (H, P), param_dtype),
    )

  def step(params: LSTMProjectedParams, carry: LSTMCarry, x: Array) -> tuple[LSTMCarry, Array]:
    h, c = carry
    z = base.affine(x, params.w_x, params.b) + h @ params.w_h  # [..., 4H]
    i = jax.nn.sigmoid(_block(z, 0, H))
    f = jax.nn.sigmoid(_block(z, 1, H))
    g = jnp.tanh(_block(z, 2, H))
    o = jax.nn.sigmoid(_block(z, 3, H))
    c_new = f * c + i * g
    h_new = ((o * jnp.tanh(c_new)) @ params.w_r).astype(h.dtype)  # [..., P]
    return LSTMCarry(h_new, c_new.astype(c.dtype)), h_new

  cell = build(
    init,
    step,
    _lstm_zeros(H, P),
    name="lstm_projected",
    what=what,
    input_weight="w_x",
    output_size=P,
  )
  # the repr shows hidden_size = P (what the next layer sees) and the cell state's H
  return cell._replace(options=(("cell_size", H), ("forget_bias", forget_bias)))


# ----------------------------------------------------------------- layer normalisation


class LayerNormLSTMParams(NamedTuple):
  """The params of `rnnjax.layer_norm_lstm`, gate blocks in the order (i, f, g, o).

  Attributes:
    w_x: ``[I, 4H]``, the input weights.
    w_h: ``[H, 4H]``, the recurrent weights.
    b: ``[4H]``, the bias (the paper's ``β_1 + β_2 + b``, one vector).
    g_x: ``[4H]``, the gain of the input term's normalisation (``α_2``).
    g_h: ``[4H]``, the gain of the recurrent term's normalisation (``α_1``).
    g_c: ``[H]``, the gain of the cell state's normalisation (``α_3``).
    b_c: ``[H]``, its bias (``β_3``).
  """

  w_x: Array  # [I, 4H]  blocks (i, f, g, o)
  w_h: Array  # [H, 4H]
  b: Array  # [4H]
  g_x: Array  # [4H]
  g_h: Array  # [4H]
  g_c: Array  # [H]
  b_c: Array  # [H]


def _check_eps(eps: float, what: str) -> float:
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
    raise ValueError(f"{what}: eps must be a positive number, got {eps!r}")
  return float(eps)


@base.memoized
def layer_norm_lstm(
  hidden_size: int,
  *,
  eps: float = 1e-5,
  forget_bias: float = 1.0,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """The layer-normalised LSTM (Ba, Kiros & Hinton 2016).

  With ``LN(z; α, β) = α ⊙ (z − μ(z)) / sqrt(v(z) + ε) + β`` over the features
  of each example (``μ``, ``v`` their mean and variance), the input and the
  recurrent terms are normalised apart, each over all four gate blocks
  together, and the cell state on its way to the output::

      [i|f|g|o] = LN(x_t w_x; α_2) + LN(h_{t-1} w_h; α_1) + b
      c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
      h_t = σ(o) ⊙ tanh(LN(c_t; α_3, β_3))

  The carried ``c_t`` itself is not normalised (as in the paper). The paper's
  biases ``β_1``, ``β_2`` and ``b`` add up and are one vector ``b`` here.
  The step is invariant to a rescaling of ``w_x`` or of ``w_h`` (up to ``ε``).

  Args:
    hidden_size: H.
    eps: ``ε``, added to the variance (1e-5, as the authors' code).
    forget_bias: added to ``b_f`` at init.
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params
    `LayerNormLSTMParams` (gains 1, biases 0 at init) and carry
    ``rnnjax.LSTMCarry(h, c)``.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.layer_norm_lstm(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    >>> ys.shape
    (5, 2, 4)
  """
  what = "rnnjax.layer_norm_lstm"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  eps = _check_eps(eps, what)
  recurrent_init = inits.blockwise(inits.orthogonal(), 4)

  def init(key: Array, input_size: int) -> LayerNormLSTMParams:
    kx, kh = jax.random.split(key)
    return LayerNormLSTMParams(
      w_x=inits.lecun_normal()(kx, (input_size, 4 * H), param_dtype),
      w_h=recurrent_init(kh, (H, 4 * H), param_dtype),
      b=_forget_bias(H, 4, 1, forget_bias, param_dtype),
      g_x=jnp.ones((4 * H,), param_dtype),
      g_h=jnp.ones((4 * H,), param_dtype),
      g_c=jnp.ones((H,), param_dtype),
      b_c=jnp.zeros((H,), param_dtype),
    )

  def step(params: LayerNormLSTMParams, carry: LSTMCarry, x: Array) -> tuple[LSTMCarry, Array]:
    h, c = carry
    z = _layer_norm(x @ params.w_x, params.g_x, params.b, eps)  # b: the three biases
    z = z + _layer_norm(h @ params.w_h, params.g_h, None, eps)  # [..., 4H]
    i = jax.nn.sigmoid(_block(z, 0, H))
    f = jax.nn.sigmoid(_block(z, 1, H))
    g = jnp.tanh(_block(z, 2, H))
    o = jax.nn.sigmoid(_block(z, 3, H))
    c_new = f * c + i * g
    h_new = (o * jnp.tanh(_layer_norm(c_new, params.g_c, params.b_c, eps))).astype(h.dtype)
    return LSTMCarry(h_new, c_new.astype(c.dtype)), h_new

  cell = build(
    init, step, _lstm_zeros(H), name="layer_norm_lstm", what=what, input_weight="w_x", output_size=H
  )
  return cell._replace(options=(("eps", eps), ("forget_bias", forget_bias)))


class LayerNormGRUParams(NamedTuple):
  """The params of `rnnjax.layer_norm_gru`, gate blocks in the order (r, z, n).

  Attributes:
    w_x: ``[I, 3H]``, the input weights.
    w_h: ``[H, 3H]``, the recurrent weights.
    b: ``[3H]``, the bias added after the normalisations (for ``r, z`` the sum
      of both terms' ``β``; for ``n`` the input term's).
    b_hn: ``[H]``, the ``β`` of the candidate's recurrent term, inside the reset.
    g_x: ``[3H]``, the gains of the input term's normalisations.
    g_h: ``[3H]``, the gains of the recurrent term's normalisations.
  """

  w_x: Array  # [I, 3H]  blocks (r, z, n)
  w_h: Array  # [H, 3H]
  b: Array  # [3H]
  b_hn: Array  # [H]
  g_x: Array  # [3H]
  g_h: Array  # [3H]


@base.memoized
def layer_norm_gru(
  hidden_size: int, *, eps: float = 1e-5, param_dtype: DType = jnp.float32
) -> base.Cell:
  """The layer-normalised GRU (Ba, Kiros & Hinton 2016).

  As the authors' code (``lngru_layer``, github.com/ryankiros/layer-norm), the
  input and the recurrent terms are normalised apart, the two gates (r, z)
  together and the candidate's block on its own, with the reset after the
  normalisation of ``h_{t-1} w_hn`` (``LN`` as in `layer_norm_lstm`)::

      [r|z] = σ(LN(x_t w_x[r,z]; α_x) + LN(h_{t-1} w_h[r,z]; α_h) + b[r,z])
      n_t = tanh(LN(x_t w_xn; α_xn) + b_n + r ⊙ (LN(h_{t-1} w_hn; α_hn) + b_hn))
      h_t = z ⊙ h_{t-1} + (1 − z) ⊙ n_t

  The gates' ``β`` of both terms add up into ``b[r,z]``; the authors' extra
  bias before the input term's normalisation is left out (the paper's ``LN(W
  x)`` has none).

  Args:
    hidden_size: H.
    eps: ``ε``, added to the variance (1e-5, as the authors' code).
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params
    `LayerNormGRUParams` (gains 1, biases 0 at init) and carry ``h: [..., H]``.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.layer_norm_gru(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    >>> carry.shape
    (2, 4)
  """
  what = "rnnjax.layer_norm_gru"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  eps = _check_eps(eps, what)
  recurrent_init = inits.blockwise(inits.orthogonal(), 3)

  def init(key: Array, input_size: int) -> LayerNormGRUParams:
    kx, kh = jax.random.split(key)
    return LayerNormGRUParams(
      w_x=inits.lecun_normal()(kx, (input_size, 3 * H), param_dtype),
      w_h=recurrent_init(kh, (H, 3 * H), param_dtype),
      b=jnp.zeros((3 * H,), param_dtype),
      b_hn=jnp.zeros((H,), param_dtype),
      g_x=jnp.ones((3 * H,), param_dtype),
      g_h=jnp.ones((3 * H,), param_dtype),
    )

  def step(params: LayerNormGRUParams, h: Array, x: Array) -> tuple[Array, Array]:
    ax, ah = x @ params.w_x, h @ params.w_h  # [..., 3H] each
    gx, gh, b = params.g_x, params.g_h, params.b
    gates = jax.nn.sigmoid(
      _layer_norm(ax[..., : 2 * H], gx[: 2 * H], b[: 2 * H], eps)
      + _layer_norm(ah[..., : 2 * H], gh[: 2 * H], None, eps)
    )
    r, z = _block(gates, 0, H), _block(gates, 1, H)
    nx = _layer_norm(ax[..., 2 * H :], gx[2 * H :], b[2 * H :], eps)
    nh = _layer_norm(ah[..., 2 * H :], gh[2 * H :], params.b_hn, eps)
    n = jnp.tanh(nx + r * nh)
    new = (z * h + (1.0 - z) * n).astype(h.dtype)
    return new, new

  cell = build(
    init, step, base.zeros_carry(H), name="layer_norm_gru", what=what, input_weight="w_x"
  )
  return cell._replace(options=(("eps", eps),))


# ----------------------------------------------------------------- orthogonal RNN


class OrthogonalRNNParams(NamedTuple):
  """The params of `rnnjax.orthogonal_rnn`.

  Attributes:
    w_x: ``[I, H]``, the input weights.
    a: ``[H, H]``, unconstrained; the recurrent matrix is ``expm(a − aᵀ)``.
    b: ``[H]``, the bias.
  """

  w_x: Array  # [I, H]
  a: Array  # [H, H]
  b: Array  # [H]


def _henaff_skew(key: Array, H: int, dtype: DType) -> Array:
  """``a`` with ``a − aᵀ`` block-diagonal, 2×2 blocks of angle ``s ~ U[−π, π]``
  (Henaff, Szlam & LeCun 2016; the expRNN's default): ``expm(a − aᵀ)`` is then
  a rotation by ``s_k`` in each plane ``(2k, 2k+1)``."""
  s = jax.random.uniform(key, (H // 2,), dtype, -math.pi, math.pi)
  idx = 2 * jnp.arange(H // 2)
  return jnp.zeros((H, H), dtype).at[idx, idx + 1].set(s)


@base.memoized
def orthogonal_rnn(
  hidden_size: int, activation: str = "tanh", *, param_dtype: DType = jnp.float32
) -> base.Cell:
  """The orthogonal RNN by the exponential map (expRNN; Lezcano-Casado &
  Martínez-Rubio 2019).

  The recurrent matrix is the exponential of a skew-symmetric matrix, so it is
  orthogonal for any params, and plain gradient descent on ``A`` stays on the
  orthogonal group with no projection::

      W = expm(A − Aᵀ)                       # Wᵀ W = I
      h_t = f(x_t w_x + h_{t-1} W + b)

  With ``activation="linear"`` the step Jacobian ``∂h_t/∂h_{t-1} = Wᵀ`` is an
  isometry: every singular value is 1, and gradients neither vanish nor
  explode at any lag (`rnnjax.jacobian` measures it).

  ``W`` is computed inside each step (``O(H³)``: the protocol has no
  per-sequence hook). For long sequences, compute it once and run the
  hand-written fast path of `rnnjax.elman`, which has the same step:
  ``rj.elman(H, activation)`` with ``ElmanParams(p.w_x, expm(p.a − p.a.T),
  p.b)``, differentiated through ``expm`` by autodiff.

  Args:
    hidden_size: H.
    activation: ``f``: ``"tanh"``, ``"linear"``, ``"relu"`` or ``"sigmoid"``.
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params
    `OrthogonalRNNParams` and carry ``h: [..., H]``; ``A`` starts with
    ``W`` a rotation by an angle ``U[−π, π]`` in each plane of unit pairs.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> params = rj.orthogonal_rnn(4).init(jax.random.key(0), 3)
    >>> W = jax.scipy.linalg.expm(params.a - params.a.T)
    >>> bool(jnp.allclose(W.T @ W, jnp.eye(4), atol=1e-5))
    True
  """
  what = "rnnjax.orthogonal_rnn"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  fn = _activation(activation, what)

  def init(key: Array, input_size: int) -> OrthogonalRNNParams:
    kx, ka = jax.random.split(key)
    return OrthogonalRNNParams(
      w_x=inits.lecun_normal()(kx, (input_size, H), param_dtype),
      a=_henaff_skew(ka, H, param_dtype),
      b=jnp.zeros((H,), param_dtype),
    )

  def step(params: OrthogonalRNNParams, h: Array, x: Array) -> tuple[Array, Array]:
    W = jax.scipy.linalg.expm(params.a - params.a.T)  # [H, H], orthogonal
    new = fn(base.affine(x, params.w_x, params.b) + h @ W).astype(h.dtype)
    return new, new

  cell = build(
    init, step, base.zeros_carry(H), name="orthogonal_rnn", what=what, input_weight="w_x"
  )
  return cell._replace(options=(("activation", activation),))
