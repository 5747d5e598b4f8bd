"""The convolutional LSTM (Shi et al. 2015), as flax's ``ConvLSTMCell``,
written as a user would: a factory returning `rnnjax.custom_cell`.

`rnnjax.scan` takes ``xs: [T, B, I]`` (rank 3), so images travel flattened:
a frame ``[B, *S, C]`` (``S = (H, W)`` for images, any number of spatial
axes) is given as ``[B, prod(S)·C]`` and the carry is kept flattened too
(``[B, prod(S)·F]``); the step reshapes to ``[B, *S, ·]`` for the
convolutions and back. ``xs.reshape(T, B, -1)`` makes the inputs,
``ys.reshape(T, B, *S, F)`` unflattens the outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._src import arguments
from rnnjax._src import init as inits
from rnnjax._src.cells import base
from rnnjax._src.cells.lstm import LSTMCarry
from rnnjax._src.custom import custom_cell
from rnnjax._src.typing import Array, DType

__all__ = ["ConvLSTMParams", "conv_lstm"]


class ConvLSTMParams(NamedTuple):
  """The params of `rnnjax.conv_lstm`, gate blocks in the order (i, f, g, o).

  Attributes:
    w_ih: ``[*K, C, 4F]``, the input-to-state kernels of the four blocks
      side by side on the last axis (``K`` the kernel size, ``C`` the input
      channels).
    w_hh: ``[*K, F, 4F]``, the state-to-state kernels.
    b: ``[4F]``, the bias (one per gate channel, shared over positions).
  """

  w_ih: Array  # [*K, C, 4F]  blocks (i, f, g, o)
  w_hh: Array  # [*K, F, 4F]  blocks (i, f, g, o)
  b: Array  # [4F]


def _tuple(name: str, value: object, n: int | None, what: str) -> tuple[int, ...]:
  """``value`` as a tuple of positive ints (an int is repeated ``n`` times)."""
  if isinstance(value, int) and not isinstance(value, bool):
    if n is None:
      raise TypeError(f"{what}: {name} must be a tuple of positive ints, got {value!r}")
    value = (value,) * n
  if not isinstance(value, Sequence) or isinstance(value, str) or not value:
    raise TypeError(f"{what}: {name} must be a non-empty tuple of positive ints, got {value!r}")
  out = tuple(arguments.positive_int(f"{name}[{k}]", v, what) for k, v in enumerate(value))
  if n is not None and len(out) != n:
    raise ValueError(
      f"{what}: {name} {out} has {len(out)} axes but spatial_shape has {n}; give one "
      f"kernel extent per spatial axis"
    )
  return out


@base.memoized
def conv_lstm(
  features: int,
  kernel_size: int | Sequence[int],
  spatial_shape: Sequence[int],
  *,
  forget_bias: float = 1.0,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """The convolutional LSTM (Shi, Chen, Wang, Yeung, Wong & Woo 2015), as
  flax's ``ConvLSTMCell`` (and Keras's ``ConvLSTM2D``, haiku's ``Conv2DLSTM``).

  The LSTM with convolutions in place of the matmuls: over a frame
  ``x_t: [B, *S, C]`` and states ``h_t, c_t: [B, *S, F]``, with ``∗`` an
  N-d convolution (stride 1, ``"SAME"`` zero padding, as flax's default, so
  every state keeps the spatial shape ``S``)::

      i_t = σ(w_ii ∗ x_t + w_hi ∗ h_{t-1} + b_i)
      f_t = σ(w_if ∗ x_t + w_hf ∗ h_{t-1} + b_f)
      g_t = tanh(w_ig ∗ x_t + w_hg ∗ h_{t-1} + b_g)
      o_t = σ(w_io ∗ x_t + w_ho ∗ h_{t-1} + b_o)
      c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
      h_t = o_t ⊙ tanh(c_t)

  with ``y_t = h_t``. Shi et al. also have peepholes (``w_c ⊙ c``); flax,
  haiku and Keras leave them out, and so does this cell.

  Layout: `rnnjax.scan` takes rank-3 ``xs``, so each frame is flattened,
  ``x_t: [B, prod(S)·C]`` (``xs.reshape(T, B, -1)`` from ``[T, B, *S, C]``),
  and the carry ``LSTMCarry(h, c)`` and ``y`` are ``[B, prod(S)·F]``
  (``ys.reshape(T, B, *S, F)``). ``init(key, I)`` reads ``C = I / prod(S)``.

  The input convolution ``w_i ∗ x_t + b`` is the cell's projection hint
  (`rnnjax.custom_cell`'s ``project=``/``update=``): `rnnjax.scan` computes it
  for all ``T·B`` frames in one convolution before the loop, and its gradient
  in one VJP after it; only ``w_h ∗ h_{t-1}`` runs inside the loop.

  flax's params map as (flax splits the gates in the order (i, g, f, o),
  has two biases, and adds the forget bias 1 inside the step)::

      w_ih = ih.kernel[..., blocks (i, f, g, o)]
      w_hh = hh.kernel[..., blocks (i, f, g, o)]
      b    = (ih.bias + hh.bias)[blocks (i, f, g, o)] + forget_bias on f

  which is the same cell for ``forget_bias = 1``.

  Args:
    features: F, the channels of ``h`` and ``c``.
    kernel_size: ``K``, one extent per spatial axis (an int for all axes).
    spatial_shape: ``S``, e.g. ``(H, W)``: the frames' spatial shape, which
      the states keep.
    forget_bias: added to ``b_f`` at init (flax adds 1 in the step).
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`) with params `ConvLSTMParams`
    and carry ``rnnjax.LSTMCarry(h, c)``, each ``[..., prod(S)·F]``; its
    output size is ``prod(S)·F``. Init as flax: LeCun-normal kernels
    (fan-in ``prod(K)·channels``), zero biases but for ``forget_bias``.

  Raises:
    ValueError: ``features`` or an extent is not a positive int, or
      ``kernel_size`` has another number of axes than ``spatial_shape``;
      ``init``'s ``input_size`` is not a multiple of ``prod(S)``.
    TypeError: ``kernel_size`` or ``spatial_shape`` is not a tuple of ints.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.conv_lstm(3, (3, 3), (4, 4))
    >>> frames = jnp.ones((5, 2, 4, 4, 2))                 # [T, B, H, W, C]
    >>> params = cell.init(jax.random.key(0), 4 * 4 * 2)
    >>> params.w_ih.shape, params.w_hh.shape, params.b.shape
    ((3, 3, 2, 12), (3, 3, 3, 12), (12,))
    >>> carry, ys = rj.scan(cell, params, frames.reshape(5, 2, -1))
    >>> ys.reshape(5, 2, 4, 4, 3).shape, carry.c.shape
    ((5, 2, 4, 4, 3), (2, 48))
  """
  what = "rnnjax.conv_lstm"
  F = arguments.positive_int("features", features, what)
  S = _tuple("spatial_shape", spatial_shape, None, what)
  K = _tuple("kernel_size", kernel_size, len(S), what)
  n = len(S)
  P = math.prod(S)
  # [N, *S, C] frames, [*K, C, F] kernels (flax's layout).
  dims = lax.ConvDimensionNumbers(
    lhs_spec=(0, n + 1, *range(1, n + 1)),
    rhs_spec=(n + 1, n, *range(n)),
    out_spec=(0, n + 1, *range(1, n + 1)),
  )
  # drawn in float32 and cast for half-precision param_dtype, as every rnnjax initialiser
  kernel_init = inits.in_float32(jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1))

  def init(key: Array, input_size: int) -> ConvLSTMParams:
    arguments.prng_key(key, what + ".init")
    size = arguments.positive_int("input_size", input_size, what + ".init")
    if size % P:
      raise ValueError(
        f"{what}.init: input_size {size} is not a multiple of prod(spatial_shape) = {P} "
        f"(spatial_shape {S}); a frame [B, *{S}, C] is given flattened, as "
        f"[B, {P}·C]"
      )
    C = size // P
    kx, kh = jax.random.split(key)
    b = jnp.zeros((4 * F,), param_dtype).at[F : 2 * F].add(forget_bias)
    return ConvLSTMParams(
      w_ih=kernel_init(kx, (*K, C, 4 * F), param_dtype),
      w_hh=kernel_init(kh, (*K, F, 4 * F), param_dtype),
      b=b,
    )

  def conv(v: Array, w: Array, dtype: DType) -> Array:
    """``w ∗ v`` for ``v: [..., prod(S)·c]``, as ``[N, *S, 4F]``."""
    frames = v.astype(dtype).reshape((-1, *S, w.shape[-2]))
    return lax.conv_general_dilated(
      frames, w.astype(dtype), (1,) * n, "SAME", dimension_numbers=dims
    )

  def project(params: ConvLSTMParams, x: Array) -> Array:
    """The input convolution and bias, ``[..., prod(S)·C] -> [..., prod(S)·4F]``: hoisted by
    the kernel over all ``T·B`` frames at once."""
    dtype = jnp.result_type(x, params.w_ih)
    zx = conv(x, params.w_ih, dtype) + params.b.astype(dtype).reshape((1,) * (n + 1) + (4 * F,))
    return zx.reshape((*x.shape[:-1], P * 4 * F))

  def update(params: ConvLSTMParams, carry: LSTMCarry, zx: Array) -> tuple[LSTMCarry, Array]:
    h, c = carry
    dtype = jnp.result_type(zx, h, params.w_hh)
    z = zx.astype(dtype).reshape((-1, *S, 4 * F)) + conv(h, params.w_hh, dtype)  # [N, *S, 4F]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c_prev = c.astype(dtype).reshape(i.shape)
    c_new = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    h_out = h_new.reshape(h.shape).astype(h.dtype)
    return LSTMCarry(h_out, c_new.reshape(c.shape).astype(c.dtype)), h_out

  def initial_carry(batch_shape: tuple[int, ...] = (), dtype: DType = jnp.float32) -> LSTMCarry:
    batch_shape = arguments.batch_shape(batch_shape, what + ".initial_carry")
    return LSTMCarry(
      jnp.zeros((*batch_shape, P * F), dtype), jnp.zeros((*batch_shape, P * F), dtype)
    )

  def step(params: ConvLSTMParams, carry: LSTMCarry, x: Array) -> tuple[LSTMCarry, Array]:
    return update(params, carry, project(params, x))

  cell = custom_cell(
    init, step, initial_carry, name="conv_lstm", output_size=P * F, project=project, update=update
  )
  return cell._replace(
    options=(
      ("features", F),
      ("kernel_size", K),
      ("spatial_shape", S),
      ("forget_bias", forget_bias),
    )
  )
