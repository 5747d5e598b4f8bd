"""The LSTM variants of Greff, Srivastava, Koutník, Steunebrink & Schmidhuber,
"LSTM: a search space odyssey" (IEEE TNNLS 2017), as one factory.

The paper's "vanilla" LSTM (``variant="V"``) is the peephole LSTM
(`rnnjax.peephole_lstm`), in the row-vector layout of the zoo::

    i_t = σ(x_t w_xi + h_{t-1} w_hi + p_i ⊙ c_{t-1} + b_i)     input gate
    f_t = σ(x_t w_xf + h_{t-1} w_hf + p_f ⊙ c_{t-1} + b_f)     forget gate
    g_t = tanh(x_t w_xg + h_{t-1} w_hg + b_g)                  block input
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    o_t = σ(x_t w_xo + h_{t-1} w_ho + p_o ⊙ c_t + b_o)         output gate
    h_t = o_t ⊙ tanh(c_t)

Each of the eight variants changes one thing:

* ``NIG``, no input gate: ``i_t = 1``.
* ``NFG``, no forget gate: ``f_t = 1``.
* ``NOG``, no output gate: ``o_t = 1``.
* ``NIAF``, no input activation: ``g_t = x_t w_xg + h_{t-1} w_hg + b_g``.
* ``NOAF``, no output activation: ``h_t = o_t ⊙ c_t``.
* ``NP``, no peepholes: ``p = 0`` (the equations of `rnnjax.lstm`).
* ``CIFG``, coupled input and forget gate: ``i_t = 1 − f_t``. The paper writes
  ``f_t = 1 − i_t``; since ``1 − σ(a) = σ(−a)`` the two are the same family
  (negate the gate's weights), and gating ``i`` off ``f`` keeps the forget
  bias's meaning (as `rnnjax.cifg_lstm`, which has no peepholes).
* ``FGR``, full gate recurrence: the gates also read all three gates of the
  previous step, ``a_{t-1} = [i_{t-1} | f_{t-1} | o_{t-1}]: [B, 3H]`` through
  ``w_r: [3H, 3H]`` (the paper's nine matrices ``R_{gg'}``), added to the
  pre-activations of ``i, f, o``; the carry holds ``a`` (zero at the start).

Weights: ``w_x: [I, kH]``, ``w_h: [H, kH]``, ``b: [kH]`` hold the ``k`` blocks
that the variant has, in the order (i, f, g, o) with the absent gates left out
(``NIG``, ``NFG``, ``NOG`` and ``CIFG`` have three, the others four). The
peepholes ``w_c: [mH]`` are those of the present gates among (i, f, o)
(``None`` for ``NP``); ``w_r`` is ``None`` but for ``FGR``.

The speed hint is `rnnjax.BackwardRows`, as `rnnjax.lstm`: the projection
``x w_x + b`` runs once over all ``T·B`` rows, each step's backward is written
out below, and the weights the recurrence reads get their gradients over all
rows at once from the gate pre-activations' gradients ``dz: [N, kH]``::

    dz_k = ∂L/∂(pre-activation of block k)           (σ', tanh' or 1 for NIAF's g)
    dc_t = dc_t(from t+1) + dh_t ⊙ o ⊙ s'(c_t) + dz_o ⊙ p_o,   s = tanh (NOAF: s(c) = c)
    di = dc_t ⊙ g (+ ∂L/∂i_t from a_t in FGR);  df = dc_t ⊙ c_{t-1} (CIFG: df − di)
    dc_{t-1} = dc_t ⊙ f + dz_i ⊙ p_i + dz_f ⊙ p_f;   dh_{t-1} = dz w_hᵀ
    dw_h = H_prevᵀ dZ;  dp_i = Σ dz_i ⊙ c_{t-1},  dp_f = Σ dz_f ⊙ c_{t-1},  dp_o = Σ dz_o ⊙ c_t
    FGR: da_{t-1} = [dz_i | dz_f | dz_o] w_rᵀ;  dw_r = A_prevᵀ [dZ_i | dZ_f | dZ_o]

`rnnjax.check_cell` holds this backward to ``jax.vjp`` of the step, in float64.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import arguments
from rnnjax._src import init as inits
from rnnjax._src.cells import base
from rnnjax._src.cells.lstm import LSTMCarry
from rnnjax._src.custom import build
from rnnjax._src.hints import BackwardRows
from rnnjax._src.typing import Array, DType

__all__ = ["GREFF_VARIANTS", "GreffFGRCarry", "GreffLSTMParams", "greff_blocks", "greff_lstm"]

GREFF_VARIANTS = ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")
"""The paper's vanilla LSTM ``"V"`` and its eight variants, in the paper's order."""


class GreffLSTMParams(NamedTuple):
  """The params of `rnnjax.greff_lstm`; see `greff_blocks` for the block order.

  Attributes:
    w_x: ``[I, kH]``, the input weights of the variant's ``k`` blocks.
    w_h: ``[H, kH]``, the recurrent weights.
    b: ``[kH]``, the bias.
    w_c: ``[mH]``, the diagonal peepholes of the present gates among (i, f, o),
      or None (``NP``).
    w_r: ``[3H, 3H]``, the gate-to-gate recurrence (``FGR``), or None.
  """

  w_x: Array  # [I, kH]
  w_h: Array  # [H, kH]
  b: Array  # [kH]
  w_c: Array | None = None  # [mH]
  w_r: Array | None = None  # [3H, 3H]  rows (i, f, o) of t-1, columns (i, f, o) of t


class GreffFGRCarry(NamedTuple):
  """The carry of ``greff_lstm(H, "FGR")``.

  Attributes:
    h: ``[..., H]``, the hidden state (and the output).
    c: ``[..., H]``, the cell state.
    a: ``[..., 3H]``, the previous step's gates ``[i | f | o]``.
  """

  h: Array  # [..., H]
  c: Array  # [..., H]
  a: Array  # [..., 3H]


def greff_blocks(variant: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """The gate blocks of ``w_x, w_h, b`` and the peepholes of ``w_c`` of a variant.

  Args:
    variant: one of `GREFF_VARIANTS`.

  Returns:
    ``(blocks, peepholes)``, e.g. ``(("i", "f", "g", "o"), ("i", "f", "o"))`` for
    ``"V"`` and ``(("f", "g", "o"), ("f", "o"))`` for ``"CIFG"``.

  Examples:
    >>> import rnnjax as rj
    >>> rj.greff_blocks("NOG")
    (('i', 'f', 'g'), ('i', 'f'))
  """
  arguments.choice("variant", variant, GREFF_VARIANTS, "rnnjax.greff_blocks")
  absent = {"NIG": "i", "NFG": "f", "NOG": "o", "CIFG": "i"}.get(variant, "")
  blocks = tuple(k for k in "ifgo" if k != absent)
  peeps = () if variant == "NP" else tuple(k for k in "ifo" if k != absent)
  return blocks, peeps


@base.memoized
def greff_lstm(
  hidden_size: int,
  variant: str = "V",
  *,
  forget_bias: float = 1.0,
  param_dtype: DType = jnp.float32,
) -> base.Cell:
  """The vanilla LSTM of Greff et al. (2017) or one of its eight variants.

  See the module's docstring (`rnnjax._src.cells.greff`) for the equations.

  Args:
    hidden_size: H.
    variant: ``"V"`` (vanilla: peepholes, as `rnnjax.peephole_lstm`),
      ``"NIG"``, ``"NFG"``, ``"NOG"``, ``"NIAF"``, ``"NOAF"``, ``"NP"``,
      ``"CIFG"`` or ``"FGR"``.
    forget_bias: added to ``b_f`` at init (variants with a forget gate).
    param_dtype: storage dtype of the params.

  Returns:
    A `rnnjax.Cell` (from `rnnjax.custom_cell`, with a hand-written
    `rnnjax.BackwardRows` hint) with params `GreffLSTMParams` and carry ``rnnjax.LSTMCarry(h, c)``
    (`GreffFGRCarry` for ``FGR``). Init as `rnnjax.peephole_lstm`: LeCun-normal
    ``w_x``, block-orthogonal ``w_h``, peepholes and ``w_r`` at zero.

  Raises:
    ValueError: an unknown ``variant``, or ``hidden_size`` not a positive int.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.greff_lstm(4, "CIFG")
    >>> params = cell.init(jax.random.key(0), 3)
    >>> params.w_h.shape, params.w_c.shape     # blocks (f, g, o), peepholes (f, o)
    ((4, 12), (8,))
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    >>> ys.shape, cell
    ((5, 2, 4), rnnjax.greff_lstm(4, variant='CIFG', forget_bias=1.0))
  """
  what = "rnnjax.greff_lstm"
  H = arguments.positive_int("hidden_size", hidden_size, what)
  arguments.choice("variant", variant, GREFF_VARIANTS, what)
  blocks, peeps = greff_blocks(variant)
  k = len(blocks)
  fgr = variant == "FGR"
  recurrent_init = inits.blockwise(inits.orthogonal(), k)

  def init(key: Array, input_size: int) -> GreffLSTMParams:
    kx, kh = jax.random.split(key)
    b = jnp.zeros((k * H,), param_dtype)
    if "f" in blocks:
      b = b.at[blocks.index("f") * H : (blocks.index("f") + 1) * H].set(forget_bias)
    return GreffLSTMParams(
      w_x=inits.lecun_normal()(kx, (input_size, k * H), param_dtype),
      w_h=recurrent_init(kh, (H, k * H), param_dtype),
      b=b,
      w_c=jnp.zeros((len(peeps) * H,), param_dtype) if peeps else None,
      w_r=jnp.zeros((3 * H, 3 * H), param_dtype) if fgr else None,
    )

  def initial_carry(
    batch_shape: tuple[int, ...] = (), dtype: DType = jnp.float32
  ) -> LSTMCarry | GreffFGRCarry:
    h = jnp.zeros((*batch_shape, H), dtype)
    if fgr:
      return GreffFGRCarry(h, h, jnp.zeros((*batch_shape, 3 * H), dtype))
    return LSTMCarry(h, h)

  project = base.affine_projection(None)

  Carry = LSTMCarry | GreffFGRCarry

  def peephole(params: GreffLSTMParams, name: str, like: Array) -> Array:
    """``p_name: [..., H]`` shaped like ``like``."""
    assert params.w_c is not None
    n = peeps.index(name)
    return base.row(params.w_c[n * H : (n + 1) * H], like)

  def cell_math(params: GreffLSTMParams, carry: Carry, z: Array) -> tuple[Carry, dict[str, Array]]:
    """The step given ``z = x w_x + h_{t-1} w_h + b: [..., kH]``: the new carry and
    the activations of the gates that have blocks (``blocks``)."""
    h, c = carry[0], carry[1]
    a_prev = carry.a if isinstance(carry, GreffFGRCarry) else None  # FGR: [..., 3H]
    pre = {name: z[..., n * H : (n + 1) * H] for n, name in enumerate(blocks)}
    if a_prev is not None:
      assert params.w_r is not None
      za = a_prev @ params.w_r  # [..., 3H]  a_{t-1} w_r, to (i, f, o)
      for n, name in enumerate("ifo"):
        pre[name] = pre[name] + za[..., n * H : (n + 1) * H]
    for name in "if":
      if name in peeps:
        pre[name] = pre[name] + peephole(params, name, c) * c  # p ⊙ c_{t-1}
    act: dict[str, Array] = {}
    if "f" in blocks:
      act["f"] = jax.nn.sigmoid(pre["f"])
    if "i" in blocks:
      act["i"] = jax.nn.sigmoid(pre["i"])
    act["g"] = pre["g"] if variant == "NIAF" else jnp.tanh(pre["g"])
    f = act.get("f", 1.0)
    i = 1.0 - act["f"] if variant == "CIFG" else act.get("i", 1.0)  # CIFG: i = 1 − f
    c_new = f * c + i * act["g"]
    if "o" in blocks:
      z_o = pre["o"] + (peephole(params, "o", c_new) * c_new if "o" in peeps else 0.0)
      act["o"] = jax.nn.sigmoid(z_o)  # p_o ⊙ c_t
    s_new = c_new if variant == "NOAF" else jnp.tanh(c_new)
    h_new = (act["o"] * s_new if "o" in act else s_new).astype(h.dtype)
    c_new = c_new.astype(c.dtype)
    if a_prev is not None:
      a = jnp.concatenate([i * jnp.ones_like(c_new), f * jnp.ones_like(c_new), act["o"]], -1)
      return GreffFGRCarry(h_new, c_new, a.astype(a_prev.dtype)), act
    return LSTMCarry(h_new, c_new), act

  def step(params: GreffLSTMParams, carry: Carry, x: Array) -> tuple[Carry, Array]:
    new, _ = cell_math(params, carry, project(params, x) + carry[0] @ params.w_h)
    return new, new[0]

  def forward(params: GreffLSTMParams, carry: Carry, zx: Array) -> tuple[Carry, Array, Array]:
    new, act = cell_math(params, carry, zx + carry[0] @ params.w_h)
    return new, new[0], jnp.concatenate([act[k] for k in blocks], axis=-1)  # [B, kH]

  def backward(
    params: GreffLSTMParams, prev: Carry, carry: Carry, acts: Array, d: Carry, dy: Array
  ) -> tuple[Carry, Array, Array]:
    act = {name: acts[..., n * H : (n + 1) * H] for n, name in enumerate(blocks)}
    c_prev, c = prev[1], carry[1]
    dh = d[0] + dy  # y = h
    s = c if variant == "NOAF" else jnp.tanh(c)
    da = d.a if isinstance(d, GreffFGRCarry) else None  # FGR: ∂L/∂a_t, a_t = [i | f | o]
    dact: dict[str, Array] = {}
    if da is not None:
      for n, name in enumerate("ifo"):
        dact[name] = da[..., n * H : (n + 1) * H]
    dpre: dict[str, Array] = {}
    if "o" in act:
      o = act["o"]
      do = dh * s + dact.get("o", 0.0)  # h = o ⊙ s(c)
      dpre["o"] = do * o * (1.0 - o)  # σ'
      dc = d[1] + dh * o * (1.0 if variant == "NOAF" else 1.0 - s * s)
      if "o" in peeps:
        dc = dc + dpre["o"] * peephole(params, "o", c)  # through p_o ⊙ c_t
    else:
      dc = d[1] + dh * (1.0 if variant == "NOAF" else 1.0 - s * s)
    g = act["g"]
    f = act.get("f", 1.0)
    i = 1.0 - act["f"] if variant == "CIFG" else act.get("i", 1.0)
    di = dc * g + dact.get("i", 0.0)  # c = f c_prev + i g
    df = dc * c_prev + dact.get("f", 0.0)
    dg = dc * i
    if variant == "CIFG":
      df = df - di  # i = 1 − f
    if "i" in act:
      dpre["i"] = di * act["i"] * (1.0 - act["i"])
    if "f" in act:
      dpre["f"] = df * act["f"] * (1.0 - act["f"])
    dpre["g"] = dg if variant == "NIAF" else dg * (1.0 - g * g)
    dc_prev = dc * f
    for name in "if":
      if name in peeps:
        dc_prev = dc_prev + dpre[name] * peephole(params, name, c_prev)  # p ⊙ c_{t-1}
    dz = jnp.concatenate([dpre[k] for k in blocks], axis=-1)  # [B, kH]
    dh_prev = dz @ params.w_h.T.astype(dz.dtype)  # dh_{t-1} = dz w_hᵀ
    if isinstance(prev, GreffFGRCarry):
      assert params.w_r is not None
      da_prev = jnp.concatenate([dpre[k] for k in "ifo"], -1) @ params.w_r.T  # through a w_r
      return GreffFGRCarry(dh_prev, dc_prev, da_prev), dz, dz
    return LSTMCarry(dh_prev, dc_prev), dz, dz  # dzh = dzx = dz

  def recurrent_grads(
    params: GreffLSTMParams, prev: Carry, acts: Array, dz: Array
  ) -> dict[str, Array]:
    """Over all N rows: ``dw_h = H_prevᵀ dZ``; the peepholes' ``Σ dz_k ⊙ c``
    (``c_{t-1}`` for i and f, ``c_t`` for o); FGR's ``dw_r = A_prevᵀ [dZ_i|dZ_f|dZ_o]``."""
    blk = {name: dz[..., n * H : (n + 1) * H] for n, name in enumerate(blocks)}
    out = {"w_h": prev[0].T @ dz}
    if peeps:
      c_prev = prev[1]
      cols = []
      for name in peeps:
        if name == "o":  # c_t, recomputed from the residual activations
          f = (
            acts[..., blocks.index("f") * H : (blocks.index("f") + 1) * H] if "f" in blocks else 1.0
          )
          g = acts[..., blocks.index("g") * H : (blocks.index("g") + 1) * H]
          if variant == "CIFG":
            i = 1.0 - f
          elif "i" in blocks:
            i = acts[..., blocks.index("i") * H : (blocks.index("i") + 1) * H]
          else:
            i = 1.0
          cols.append(jnp.sum(blk["o"] * (f * c_prev + i * g), axis=0))
        else:
          cols.append(jnp.sum(blk[name] * c_prev, axis=0))
      out["w_c"] = jnp.concatenate(cols)
    if isinstance(prev, GreffFGRCarry):
      out["w_r"] = prev.a.T @ jnp.concatenate([blk[k] for k in "ifo"], -1)
    return out

  cell = build(
    init,
    step,
    initial_carry,
    name="greff_lstm",
    what=what,
    fast=BackwardRows(forward, backward, recurrent_grads, project, rows_are_dzx=True),
    recurrent_weight="w_h",
    input_weight="w_x",
    output_size=H,
  )
  return cell._replace(options=(("variant", variant), ("forget_bias", forget_bias)))
