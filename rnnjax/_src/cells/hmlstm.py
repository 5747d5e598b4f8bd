"""The hierarchical multiscale LSTM (Chung, Ahn & Bengio 2017), on `rnnjax.custom_cell`.

An L-layer stack in which each layer but the top has a binary boundary detector
``z^l``. Layer l at step t (layers 1..L; the first layer reads ``h^0_t = x_t``
with ``z^0_t = 1``) forms one pre-activation for its gates ``i, f, o`` (σ),
``g`` (tanh) and its boundary unit ``z̃``:

    s_t^l = U_l^l h_{t-1}^l                                  (recurrent, always)
          + z_{t-1}^l · U_{l+1}^l h_{t-1}^{l+1}              (top-down; not for l = L)
          + z_t^{l-1} · W_{l-1}^l h_t^{l-1}                  (bottom-up)
          + b^l

and runs one of three operations (the paper's equations (2) and (3)):

    FLUSH   z_{t-1}^l = 1                      c = i ⊙ g               h = o ⊙ tanh(c)
    UPDATE  z_{t-1}^l = 0, z_t^{l-1} = 1       c = f ⊙ c_{t-1} + i ⊙ g   h = o ⊙ tanh(c)
    COPY    z_{t-1}^l = 0, z_t^{l-1} = 0       c = c_{t-1}             h = h_{t-1}

The boundary is ``z_t^l = round(hard_sigm(a · z̃_t^l))`` with
``hard_sigm(x) = max(0, min(1, (x + 1) / 2))``: 1 once the layer has finished a
segment, which makes the layer above UPDATE with it now and this layer FLUSH at
the next step. Two choices where the paper leaves room, both stated:

* the top layer has no boundary detector (its ``z`` would only ever FLUSH its
  own memory), so it UPDATEs when the layer below ends a segment and COPYs
  otherwise;
* a COPY copies the whole state, the boundary included (``z_t^l = z_{t-1}^l =
  0``): a layer ends a segment only at a step where it read something.

Training the discrete ``z`` uses the straight-through estimator: the backward
of the rounding is the hard sigmoid's gradient, ``∂z/∂z̃ = a/2`` where
``|a z̃| < 1`` and 0 outside. The slope ``a`` is annealed from 1 towards
``a_max`` as training goes (`slope_annealing`); it is the ``slope`` leaf of the
params, which the step reads through ``stop_gradient`` and the training loop
sets each step from the schedule (`set_slope`).

Gate blocks are in rnnjax's LSTM order ``(i, f, g, o)`` followed by the
boundary column, so the first ``4H`` columns of a layer are an `rnnjax.lstm`'s
weights: an UPDATE is exactly an LSTM step.

A COPY costs no work in evaluation where the whole batch copies: each layer
above the first runs under ``lax.cond`` on "some row of the batch reads this
step", and otherwise returns its state untouched (no matmul, no gate). Rows of
a batch that mix operations compute the layer and select per row. Derivatives
always come from the full step (a ``custom_jvp``): the straight-through
estimator passes gradient through ``z`` even on copying rows, so skipping
there would make a row's gradient depend on the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._src import arguments
from rnnjax._src import init as inits
from rnnjax._src.cells import base
from rnnjax._src.custom import build
from rnnjax._src.typing import Array, DType


class HMLSTMLayerParams(NamedTuple):
  """One HM-LSTM layer's params; ``G = 4H + 1`` (``4H`` for the top layer).

  Attributes:
    w_below: ``[I_l, G]``, ``W_{l-1}^l``: from the layer below (the input for l = 1).
    w_rec: ``[H, G]``, ``U_l^l``: the layer's own previous state.
    w_above: ``[H_{l+1}, G]``, ``U_{l+1}^l``: the layer above's previous state;
      None for the top layer.
    b: ``[G]``.
  """

  w_below: Array
  w_rec: Array
  w_above: Array | None
  b: Array


class HMLSTMParams(NamedTuple):
  """The params of `rnnjax.hmlstm`.

  Attributes:
    layers: one `HMLSTMLayerParams` per layer, bottom first.
    slope: ``[]``, the boundary's slope ``a``, set by the schedule (`set_slope`)
      and never differentiated.
  """

  layers: tuple[HMLSTMLayerParams, ...]
  slope: Array


class HMLSTMCarry(NamedTuple):
  """The HM-LSTM's state: per layer, bottom first.

  Attributes:
    h: ``([..., H_1], ..., [..., H_L])``.
    c: ``([..., H_1], ..., [..., H_L])``.
    z: ``([..., 1], ...)``, the boundaries ``z_{t-1}^l`` of the layers below
      the top (0. or 1.).
  """

  h: tuple[Array, ...]
  c: tuple[Array, ...]
  z: tuple[Array, ...]


def hard_sigmoid(x: Array) -> Array:
  """``max(0, min(1, (x + 1) / 2))``."""
  return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


@jax.custom_jvp
def boundary(s: Array, a: Array) -> Array:
  """The boundary ``z = round(hard_sigm(a · s))`` with its straight-through gradient.

  Forward: 1 where ``a s >= 0`` (the rounding's tie at 1/2 goes up), else 0.
  Backward (and forward-mode): the hard sigmoid's derivative,
  ``∂z/∂s = a/2`` where ``|a s| < 1`` and 0 outside; nothing flows into ``a``.

  Args:
    s: the boundary unit's pre-activation ``z̃``.
    a: the slope (a scalar).

  Returns:
    ``z``, 0. or 1., in the dtype of ``s``.
  """
  return (hard_sigmoid(a * s) >= 0.5).astype(s.dtype)  # round half up


@boundary.defjvp
def _boundary_jvp(primals: tuple[Array, Array], tangents: tuple[Array, Array]) -> Any:
  s, a = primals
  ds, _ = tangents
  inside = jnp.abs(a * s) < 1.0
  return boundary(s, a), jnp.where(inside, 0.5 * a * ds, jnp.zeros_like(ds))


class SlopeAnnealing(NamedTuple):
  """The slope schedule ``a(step) = min(a_max, 1 + (a_max − 1) · step / steps)``
  (`slope_annealing`); a hashable value, so cells built with it compare equal.

  Attributes:
    a_max: the final slope (5 in the paper).
    steps: the training steps to reach it.
  """

  a_max: float = 5.0
  steps: int = 2000

  def __call__(self, step: Any) -> Any:
    """The slope at training step ``step`` (a Python int or a traced one)."""
    frac = jnp.asarray(step, jnp.float32) / self.steps
    return jnp.minimum(self.a_max, 1.0 + (self.a_max - 1.0) * frac)


def slope_annealing(a_max: float = 5.0, steps: int = 2000) -> SlopeAnnealing:
  """The slope schedule ``a(step) = min(a_max, 1 + (a_max − 1) · step / steps)``.

  The paper raises ``a`` by 0.04 per epoch up to 5; by training step here, so
  a run of any length anneals. ``slope_annealing(1.0)`` keeps ``a = 1`` (no
  annealing).

  Args:
    a_max: the final slope (5 in the paper), ``>= 1``.
    steps: the training steps to reach it.

  Returns:
    A `SlopeAnnealing`, ``schedule(step) -> a``.

  Examples:
    >>> import rnnjax as rj
    >>> schedule = rj.slope_annealing(5.0, steps=100)
    >>> [float(schedule(s)) for s in (0, 50, 100, 1000)]
    [1.0, 3.0, 5.0, 5.0]
  """
  arguments.positive_int("steps", steps, "rnnjax.slope_annealing")
  if not a_max >= 1.0:
    raise ValueError(f"rnnjax.slope_annealing: a_max must be >= 1, got {a_max}")
  return SlopeAnnealing(float(a_max), steps)


def set_slope(params: HMLSTMParams, a: Any) -> HMLSTMParams:
  """``params`` with the boundary slope ``a``, in the slope's dtype."""
  return params._replace(slope=jnp.asarray(a, jnp.result_type(params.slope)))


def layer_step(
  p: HMLSTMLayerParams,
  h_prev: Array,
  c_prev: Array,
  z_prev: Array,
  h_above: Array | None,
  zx: Array,
  z_below: Array,
  a: Array,
  decide: Callable[[Array, Array], Array] | None = None,
) -> tuple[Array, Array, Array | None]:
  """One layer's step, given its boundaries: the paper's equations (2) and (3).

  Args:
    p: the layer's params.
    h_prev, c_prev: ``h_{t-1}^l``, ``c_{t-1}^l``, ``[B, H]``.
    z_prev: ``z_{t-1}^l``, ``[B, 1]`` (zeros for the top layer).
    h_above: ``h_{t-1}^{l+1}``, or None for the top layer.
    zx: the bottom-up term ``h_t^{l-1} W_{l-1}^l``, ``[B, G]`` (not yet gated).
    z_below: ``z_t^{l-1}``, ``[B, 1]`` (ones for the first layer).
    a: the slope.
    decide: ``decide(z̃, a) -> z`` (before the COPY mask), default `boundary`;
      `stochastic_step` passes a Bernoulli draw.

  Returns:
    ``(h_t^l, c_t^l, z_t^l)``; ``z`` is None for the top layer.
  """
  H = h_prev.shape[-1]
  s = h_prev @ p.w_rec + base.bias(p.b, zx, zx.dtype) + z_below * zx
  if h_above is not None and p.w_above is not None:
    s = s + z_prev * (h_above @ p.w_above)
  i = jax.nn.sigmoid(s[..., :H])
  f = jax.nn.sigmoid(s[..., H : 2 * H])
  g = jnp.tanh(s[..., 2 * H : 3 * H])
  o = jax.nn.sigmoid(s[..., 3 * H : 4 * H])
  copy = (1.0 - z_prev) * (1.0 - z_below)  # COPY
  update = (1.0 - z_prev) * z_below  # UPDATE; FLUSH is z_prev
  c = z_prev * (i * g) + update * (f * c_prev + i * g) + copy * c_prev
  h = copy * h_prev + (1.0 - copy) * (o * jnp.tanh(c))
  h, c = h.astype(h_prev.dtype), c.astype(c_prev.dtype)
  if s.shape[-1] == 4 * H:  # the top layer: no boundary detector
    return h, c, None
  z = (1.0 - copy) * (decide or boundary)(s[..., 4 * H :], a)  # a COPY copies z_{t-1} = 0
  return h, c, z.astype(z_prev.dtype)


@base.memoized
def hmlstm(
  hidden_sizes: Sequence[int],
  *,
  a_schedule: SlopeAnnealing | Callable[[Any], Any] | None = None,
  estimator: str = "straight_through",
  forget_bias: float = 1.0,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """A hierarchical multiscale LSTM (Chung, Ahn & Bengio 2017), all layers in one cell.

  Args:
    hidden_sizes: ``(H_1, ..., H_L)``, bottom first, ``L >= 2``.
    a_schedule: ``schedule(step) -> a``, the boundary slope by training step
      (default `slope_annealing()`: 1 to 5 over 2000 steps); the training
      loop applies it with `set_slope`. It is in the cell's ``options``.
    estimator: the boundary's gradient estimator: ``"straight_through"``
      (the hard sigmoid's gradient through the rounding).
    forget_bias: added to every layer's forget-gate bias at init.
    param_dtype: the params' dtype.

  Returns:
    A `rnnjax.Cell` with params `HMLSTMParams` and carry `HMLSTMCarry`; its
    output is ``[h^1; ...; h^L]`` (size ``Σ H_l``), which `hmlstm_output`
    turns into the paper's gated output embedding.

  Raises:
    ValueError: fewer than two layers, a size that is not a positive int, or
      an unknown estimator.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.hmlstm((8, 6))
    >>> params = cell.init(jax.random.key(0), 3)
    >>> [lp.w_rec.shape for lp in params.layers]     # 4H + 1 columns below the top
    [(8, 33), (6, 24)]
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    >>> ys.shape, [z.shape for z in carry.z]
    ((5, 2, 14), [(2, 1)])
  """
  what = "rnnjax.hmlstm"
  sizes = tuple(hidden_sizes) if not isinstance(hidden_sizes, int) else (hidden_sizes,)
  if len(sizes) < 2:
    raise ValueError(
      f"{what}: hidden_sizes must list at least two layers (bottom first), got {hidden_sizes!r}; "
      f"a one-layer HM-LSTM has no hierarchy: use rnnjax.lstm"
    )
  for k, H in enumerate(sizes):
    arguments.positive_int(f"hidden_sizes[{k}]", H, what)
  arguments.choice("estimator", estimator, ("straight_through",), what)
  schedule = a_schedule if a_schedule is not None else slope_annealing()
  if not callable(schedule):
    raise TypeError(f"{what}: a_schedule must be callable, step -> slope; got {schedule!r}")
  L = len(sizes)

  def columns(k: int) -> int:
    return 4 * sizes[k] + (k < L - 1)  # the boundary unit below the top

  def init(key: Array, input_size: int) -> HMLSTMParams:
    layers = []
    for k, (H, kk) in enumerate(zip(sizes, jax.random.split(key, L), strict=True)):
      kb, kr, ka = jax.random.split(kk, 3)
      below = input_size if k == 0 else sizes[k - 1]
      G = columns(k)
      b = jnp.zeros((G,), param_dtype).at[H : 2 * H].set(forget_bias)
      layers.append(
        HMLSTMLayerParams(
          w_below=inits.lecun_normal()(kb, (below, G), param_dtype),
          w_rec=inits.lecun_normal()(kr, (H, G), param_dtype),
          w_above=inits.lecun_normal()(ka, (sizes[k + 1], G), param_dtype) if k < L - 1 else None,
          b=b,
        )
      )
    return HMLSTMParams(tuple(layers), jnp.asarray(schedule(0), param_dtype))

  def initial_carry(batch_shape: tuple[int, ...] = (), dtype: DType = jnp.float32) -> HMLSTMCarry:
    return HMLSTMCarry(
      h=tuple(jnp.zeros((*batch_shape, H), dtype) for H in sizes),
      c=tuple(jnp.zeros((*batch_shape, H), dtype) for H in sizes),
      z=tuple(jnp.zeros((*batch_shape, 1), dtype) for _ in sizes[:-1]),
    )

  def project(params: HMLSTMParams, x: Array) -> Array:
    return x @ params.layers[0].w_below  # the first layer's bottom-up term, hoisted

  def update(params: HMLSTMParams, carry: HMLSTMCarry, zx: Array) -> tuple[HMLSTMCarry, Array]:
    a = lax.stop_gradient(params.slope)
    hs: list[Array] = []
    cs: list[Array] = []
    zs: list[Array] = []
    z_below = jnp.ones((*zx.shape[:-1], 1), zx.dtype)  # z_t^0 = 1
    for k, p in enumerate(params.layers):
      top = k == L - 1
      z_prev = jnp.zeros_like(z_below) if top else carry.z[k]
      h_above = None if top else carry.h[k + 1]
      if k == 0:
        h, c, z = layer_step(p, carry.h[0], carry.c[0], z_prev, h_above, zx, z_below, a)
      else:
        h, c, z = _skipping_copy(p, carry.h[k], carry.c[k], z_prev, h_above, hs[-1], z_below, a)
      hs.append(h)
      cs.append(c)
      if z is not None:
        zs.append(z)
        z_below = z
    return HMLSTMCarry(tuple(hs), tuple(cs), tuple(zs)), jnp.concatenate(hs, axis=-1)

  def step(params: HMLSTMParams, carry: HMLSTMCarry, x: Array) -> tuple[HMLSTMCarry, Array]:
    return update(params, carry, project(params, x))

  cell = build(
    init,
    step,
    initial_carry,
    name="hmlstm",
    what=what,
    output_size=sum(sizes),
    project=project,
    update=update,
  )
  return cell._replace(options=(("hidden_sizes", sizes), ("a_schedule", schedule)))


def stochastic_step(
  params: HMLSTMParams, carry: HMLSTMCarry, x: Array, u: Array
) -> tuple[HMLSTMCarry, Array, Array]:
  """One HM-LSTM step with stochastic boundaries: the REINFORCE estimator's forward.

  Each boundary below the top is drawn, ``z_t^l ~ Bernoulli(p_t^l)`` with
  ``p_t^l = hard_sigm(a z̃_t^l)`` (the probability whose rounding is the
  deterministic `hmlstm`'s ``z``), from the uniform noise ``u``; ``z`` passes
  no gradient. The step also returns ``log P(z_t)``, the log-probability of the
  boundaries drawn (COPYing rows draw nothing), whose gradient the score-function
  (REINFORCE) estimator weighs by the loss that follows:
  ``∇ E[L] = E[(L − b) ∇ log P(z)] + E[∇ L | z]`` for any baseline ``b``. It is
  unbiased where the straight-through estimator is not, and has the higher
  variance.

  Args:
    params: `HMLSTMParams` of an `hmlstm` cell.
    carry: its `HMLSTMCarry`, ``[B, ...]``.
    x: ``[B, I]``.
    u: ``[B, L - 1]`` uniform noise in ``[0, 1)``, one column per boundary.

  Returns:
    ``(carry, y, logp)``: the next carry, the output ``[h^1; ...; h^L]`` and
    ``logp: [B]``, ``Σ_l log P(z_t^l)``.
  """
  a = lax.stop_gradient(params.slope)
  L = len(params.layers)
  if u.shape[-1] != L - 1:
    raise ValueError(
      f"rnnjax.hmlstm stochastic_step: u has {u.shape[-1]} columns but the cell has {L - 1} "
      f"boundaries (u.shape={u.shape}); pass u of shape (B, {L - 1})"
    )
  hs: list[Array] = []
  cs: list[Array] = []
  zs: list[Array] = []
  logp = jnp.zeros(x.shape[:-1], x.dtype)
  below = x
  z_below = jnp.ones((*x.shape[:-1], 1), x.dtype)
  for k, p in enumerate(params.layers):
    top = k == L - 1
    z_prev = jnp.zeros_like(z_below) if top else carry.z[k]
    drawn: list[Array] = []

    def draw(s: Array, a: Array, k: int = k, drawn: list[Array] = drawn) -> Array:
      prob = hard_sigmoid(a * s)
      z = lax.stop_gradient((u[..., k : k + 1] < prob).astype(s.dtype))
      drawn.append(jnp.log(jnp.maximum(jnp.where(z > 0, prob, 1.0 - prob), 1e-12)))
      return z

    h, c, z = layer_step(
      p,
      carry.h[k],
      carry.c[k],
      z_prev,
      None if top else carry.h[k + 1],
      below @ p.w_below,
      z_below,
      a,
      draw,
    )
    hs.append(h)
    cs.append(c)
    if z is not None:
      copy = (1.0 - z_prev) * (1.0 - z_below)
      logp = logp + ((1.0 - copy) * drawn[0])[..., 0]
      zs.append(z)
      z_below = z
    below = h
  return HMLSTMCarry(tuple(hs), tuple(cs), tuple(zs)), jnp.concatenate(hs, axis=-1), logp


@jax.custom_jvp
def _skipping_copy(
  p: HMLSTMLayerParams,
  h_prev: Array,
  c_prev: Array,
  z_prev: Array,
  h_above: Array | None,
  h_below: Array,
  z_below: Array,
  a: Array,
) -> tuple[Array, Array, Array | None]:
  """`layer_step` for a level above the first, skipped (state copied, no compute)
  when every row of the batch COPYs.

  The skip is for evaluation only. Its derivatives (forward and reverse mode)
  are those of the full step: on a copying row the straight-through estimator
  still passes gradient through ``z`` into ``h`` and into the next boundary, so
  a row's gradient must not depend on whether another row of the batch reads."""

  def compute(_: None) -> tuple[Array, Array, Array | None]:
    return _full_step(p, h_prev, c_prev, z_prev, h_above, h_below, z_below, a)

  def copy(_: None) -> tuple[Array, Array, Array | None]:
    return h_prev, c_prev, None if h_above is None else jnp.zeros_like(z_prev)

  reads = jnp.any((z_prev + z_below) > 0)
  return lax.cond(reads, compute, copy, None)


def _full_step(
  p: HMLSTMLayerParams,
  h_prev: Array,
  c_prev: Array,
  z_prev: Array,
  h_above: Array | None,
  h_below: Array,
  z_below: Array,
  a: Array,
) -> tuple[Array, Array, Array | None]:
  return layer_step(p, h_prev, c_prev, z_prev, h_above, h_below @ p.w_below, z_below, a)


@_skipping_copy.defjvp
def _skipping_copy_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> Any:
  return jax.jvp(_full_step, primals, tangents)  # differentiate the full step


class HMLSTMOutputParams(NamedTuple):
  """The output module's params (`hmlstm_output`).

  Attributes:
    w_gate: ``[Σ H_l, L]``, one gate vector ``w_l`` per layer, side by side.
    w_out: ``([H_1, E], ..., [H_L, E])``, the per-layer ``W_l``.
  """

  w_gate: Array
  w_out: tuple[Array, ...]


def init_hmlstm_output(key: Array, hidden_sizes: Sequence[int], size: int) -> HMLSTMOutputParams:
  """Params of `hmlstm_output` for layers ``hidden_sizes`` and an embedding of ``size``."""
  kg, *ks = jax.random.split(key, 1 + len(hidden_sizes))
  return HMLSTMOutputParams(
    w_gate=inits.lecun_normal()(kg, (sum(hidden_sizes), len(hidden_sizes)), jnp.float32),
    w_out=tuple(
      inits.lecun_normal()(k, (H, size), jnp.float32) for k, H in zip(ks, hidden_sizes, strict=True)
    ),
  )


def hmlstm_output(params: HMLSTMOutputParams, ys: Array) -> Array:
  """The paper's output module: a gated sum of every layer's state, then ReLU.

      g^l = σ(w_lᵀ [h^1; ...; h^L])           (a scalar gate per layer)
      h^e = ReLU(Σ_l g^l W_l h^l)

  Args:
    params: `HMLSTMOutputParams`.
    ys: ``[..., Σ H_l]``, the HM-LSTM's outputs ``[h^1; ...; h^L]``.

  Returns:
    ``h^e: [..., E]``, which feeds the softmax.
  """
  gates = jax.nn.sigmoid(ys @ params.w_gate.astype(ys.dtype))  # [..., L]
  out = jnp.zeros((*ys.shape[:-1], params.w_out[0].shape[-1]), ys.dtype)
  start = 0
  for k, w in enumerate(params.w_out):
    H = w.shape[0]
    out = out + gates[..., k : k + 1] * (ys[..., start : start + H] @ w.astype(ys.dtype))
    start += H
  return jax.nn.relu(out)
