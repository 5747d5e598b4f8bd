"""Weight mapping from flax linen cells and PyTorch layers to rnnjax params.

rnnjax stores row-vector weights (``x @ w_x``) with gate blocks side by side:

| cell        | k | gate blocks  | biases from PyTorch (layer 0)                       |
|-------------|---|--------------|-----------------------------------------------------|
| elman       | 1 | (h)          | ``b = b_ih + b_hh``                                 |
| gru         | 3 | (r, z, n)    | ``b = b_ih + [b_hh[:2H], 0]``, ``b_hn = b_hh[2H:]`` |
| lstm        | 4 | (i, f, g, o) | ``b = b_ih + b_hh``                                 |
| lstm + proj | 4 | (i, f, g, o) | ``b = b_ih + b_hh``, ``w_r = weight_hr.T``          |

and for every cell ``w_x = weight_ih.T`` (``[I, kH]``), ``w_h = weight_hh.T``
(``[H, kH]``; ``[P, 4H]`` with a projection).

An ``nn.LSTM(proj_size=P)`` (its state dict has ``weight_hr_l{k}``, ``[P, H]``,
and ``weight_hh_l{k}`` is ``[4H, P]``) is ``rj.lstm_projected(H, proj_size=P)``:
``kind="lstm"`` detects the projection and returns `rnnjax.LSTMProjectedParams`
with ``w_h = weight_hh.T`` (``[P, 4H]``), ``b = b_ih + b_hh`` and
``w_r = weight_hr.T`` (``[H, P]``).

PyTorch's GRU is ``rj.gru(H, reset="after")``. Arrays may be NumPy or torch
tensors (anything ``np.asarray`` takes; torch tensors are detached first).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnjax._src.cells.elman import ElmanParams
from rnnjax._src.cells.gru import GRUParams
from rnnjax._src.cells.lstm import LSTMParams
from rnnjax._src.cells.zoo import LSTMProjectedParams

__all__ = ["from_flax", "from_torch"]

CellParams = ElmanParams | GRUParams | LSTMParams | LSTMProjectedParams
"""The params of a built-in cell."""

_GATES = {"elman": "h", "gru": "rzn", "lstm": "ifgo"}


def _np(a: Any) -> np.ndarray:
  if hasattr(a, "detach"):
    a = a.detach().cpu()
  return np.asarray(a)


def from_torch(
  kind: str, state: dict[str, Any], layer: int = 0, suffix: str = "", dtype: Any = jnp.float32
) -> CellParams:
  """Params for ``rj.<kind>`` from a torch ``nn.RNN/GRU/LSTM`` ``state_dict()``.

  Args:
    kind: ``"elman"``, ``"gru"`` (use ``reset="after"``) or ``"lstm"`` (an
      ``nn.LSTM(proj_size=P)``, detected by ``weight_hr_l{layer}{suffix}`` in
      ``state``, maps to ``rj.lstm_projected(H, proj_size=P)``).
    state: the module's ``state_dict()`` (or a dict of arrays with its keys).
    layer: which stacked layer (``_l{layer}``).
    suffix: ``"_reverse"`` for the backward direction of a bidirectional layer.
    dtype: the dtype of the returned arrays.

  Returns:
    `rnnjax.ElmanParams`, `rnnjax.GRUParams` (with ``b_hn``),
    `rnnjax.LSTMParams` or (with a projection) `rnnjax.LSTMProjectedParams`,
    in the row-vector layout; missing biases count as zeros.

  Raises:
    ValueError: ``kind`` is unknown, ``state`` lacks the layer's weights, or
      it has a projection ``weight_hr`` for a kind other than ``"lstm"``.

  Examples:
    A state dict of NumPy arrays works as well as a torch module's:

    >>> import numpy as np, rnnjax as rj
    >>> H, I = 4, 3
    >>> state = {"weight_ih_l0": np.ones((4 * H, I)), "weight_hh_l0": np.ones((4 * H, H))}
    >>> params = rj.interop.from_torch("lstm", state)
    >>> params.w_x.shape, params.w_h.shape, params.b.shape
    ((3, 16), (4, 16), (16,))

    With ``weight_hr_l0`` (``nn.LSTM(I, H, proj_size=P)``) the params are
    those of ``rj.lstm_projected(H, proj_size=P)``:

    >>> P = 2
    >>> state = {"weight_ih_l0": np.ones((4 * H, I)), "weight_hh_l0": np.ones((4 * H, P)),
    ...          "weight_hr_l0": np.ones((P, H))}
    >>> params = rj.interop.from_torch("lstm", state)
    >>> type(params).__name__, params.w_h.shape, params.w_r.shape
    ('LSTMProjectedParams', (2, 16), (4, 2))
  """
  if kind not in _GATES:
    raise ValueError(f"from_torch: unknown kind {kind!r}; expected one of {sorted(_GATES)}")

  def key(name: str) -> str:
    return f"{name}_l{layer}{suffix}"

  missing = [key(n) for n in ("weight_ih", "weight_hh") if key(n) not in state]
  if missing:
    raise ValueError(f"from_torch: state has no {missing}; keys are {sorted(state)}")
  w_ih, w_hh = _np(state[key("weight_ih")]), _np(state[key("weight_hh")])
  H = w_hh.shape[1]
  b_ih = _np(state.get(key("bias_ih"), np.zeros(w_ih.shape[0], w_ih.dtype)))
  b_hh = _np(state.get(key("bias_hh"), np.zeros(w_hh.shape[0], w_hh.dtype)))

  def cast(a: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(a, dtype)

  if key("weight_hr") in state:
    if kind != "lstm":
      raise ValueError(
        f"from_torch: {key('weight_hr')} (a projection, nn.LSTM(proj_size=P)) "
        f"needs kind='lstm', got {kind!r}"
      )
    w_hr = _np(state[key("weight_hr")])  # [P, H]
    return LSTMProjectedParams(cast(w_ih.T), cast(w_hh.T), cast(b_ih + b_hh), cast(w_hr.T))
  if kind == "gru":
    b = b_ih + np.concatenate([b_hh[: 2 * H], np.zeros(H, b_hh.dtype)])
    return GRUParams(cast(w_ih.T), cast(w_hh.T), cast(b), cast(b_hh[2 * H :]))
  params_type = ElmanParams if kind == "elman" else LSTMParams
  return params_type(cast(w_ih.T), cast(w_hh.T), cast(b_ih + b_hh))


def from_flax(kind: str, params: dict[str, Any]) -> CellParams:
  """Params for ``rj.<kind>`` from a flax linen cell's ``variables["params"]``.

  Args:
    kind: ``"elman"`` (``SimpleCell``), ``"gru"`` (``GRUCell``, use
      ``reset="after"``), ``"lstm"`` (``LSTMCell`` or ``OptimizedLSTMCell``).
    params: the cell's ``variables["params"]``: ``{"i": {"kernel", "bias"}, "h":
      ...}`` for ``SimpleCell``, one ``{"kernel"[, "bias"]}`` dict per gate
      (``"ir"``, ``"hr"``, ...) for the gated cells.

  Returns:
    `rnnjax.ElmanParams`, `rnnjax.GRUParams` (with ``b_hn``) or
    `rnnjax.LSTMParams`; the gates' biases summed where rnnjax keeps one.

  Raises:
    ValueError: ``kind`` is unknown.
  """
  if kind not in _GATES:
    raise ValueError(f"from_flax: unknown kind {kind!r}; expected one of {sorted(_GATES)}")

  def cat(arrs: list[Any]) -> Any:
    return jnp.concatenate(arrs, axis=-1)

  def zeros_like_bias(name: str) -> Any:
    return jnp.zeros(params[name]["kernel"].shape[-1], params[name]["kernel"].dtype)

  def bias(name: str) -> Any:
    return params[name].get("bias", zeros_like_bias(name))

  if kind == "elman":
    return ElmanParams(
      params["i"]["kernel"],
      params["h"]["kernel"],
      params["i"]["bias"] + params["h"].get("bias", 0.0),
    )
  gates = _GATES[kind]
  w_x = cat([params["i" + g]["kernel"] for g in gates])
  w_h = cat([params["h" + g]["kernel"] for g in gates])
  if kind == "gru":
    b = cat([bias("ir") + bias("hr"), bias("iz") + bias("hz"), bias("in")])
    return GRUParams(w_x, w_h, b, bias("hn"))
  return LSTMParams(w_x, w_h, cat([bias("i" + g) + bias("h" + g) for g in gates]))
