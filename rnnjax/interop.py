"""Weight mapping from flax linen cells and PyTorch layers to rnnjax params.

rnnjax stores row-vector weights (``x @ w_x``) with gate blocks side by side:

=========  =====  ====================  =============================================
cell       k      gate blocks           PyTorch (layer 0)
=========  =====  ====================  =============================================
elman      1      (h)                   w_x = weight_ih.T, w_h = weight_hh.T, b = b_ih + b_hh
gru        3      (r, z, n)             w_x = weight_ih.T, w_h = weight_hh.T,
                                        b = b_ih + [b_hh[:2H], 0], b_hn = b_hh[2H:]
lstm       4      (i, f, g, o)          w_x = weight_ih.T, w_h = weight_hh.T, b = b_ih + b_hh
=========  =====  ====================  =============================================

PyTorch's GRU is ``rj.gru(H, reset="after")``. Arrays may be NumPy or torch
tensors (anything ``np.asarray`` takes; torch tensors are detached first).
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from rnnjax.cells.elman import ElmanParams
from rnnjax.cells.gru import GRUParams
from rnnjax.cells.lstm import LSTMParams

_GATES = {"elman": "h", "gru": "rzn", "lstm": "ifgo"}


def _np(a):
  if hasattr(a, "detach"):
    a = a.detach().cpu()
  return np.asarray(a)


def from_torch(kind: str, state: dict, layer: int = 0, suffix: str = "", dtype=jnp.float32):
  """Params for ``rj.<kind>`` from a torch ``nn.RNN/GRU/LSTM`` ``state_dict()``.

  Args:
    kind: ``"elman"``, ``"gru"`` (use ``reset="after"``) or ``"lstm"``.
    state: the module's ``state_dict()`` (or a dict of arrays with its keys).
    layer: which stacked layer (``_l{layer}``).
    suffix: ``"_reverse"`` for the backward direction of a bidirectional layer.
  """
  if kind not in _GATES:
    raise ValueError(f"from_torch: unknown kind {kind!r}; expected one of {sorted(_GATES)}")
  key = lambda name: f"{name}_l{layer}{suffix}"
  missing = [key(n) for n in ("weight_ih", "weight_hh") if key(n) not in state]
  if missing:
    raise ValueError(f"from_torch: state has no {missing}; keys are {sorted(state)}")
  w_ih, w_hh = _np(state[key("weight_ih")]), _np(state[key("weight_hh")])
  H = w_hh.shape[1]
  b_ih = _np(state.get(key("bias_ih"), np.zeros(w_ih.shape[0], w_ih.dtype)))
  b_hh = _np(state.get(key("bias_hh"), np.zeros(w_hh.shape[0], w_hh.dtype)))
  cast = lambda a: jnp.asarray(a, dtype)
  if kind == "gru":
    b = b_ih + np.concatenate([b_hh[:2 * H], np.zeros(H, b_hh.dtype)])
    return GRUParams(cast(w_ih.T), cast(w_hh.T), cast(b), cast(b_hh[2 * H:]))
  params_type = ElmanParams if kind == "elman" else LSTMParams
  return params_type(cast(w_ih.T), cast(w_hh.T), cast(b_ih + b_hh))


def from_flax(kind: str, params: dict):
  """Params for ``rj.<kind>`` from a flax linen cell's ``variables["params"]``.

  ``kind``: ``"elman"`` (``SimpleCell``), ``"gru"`` (``GRUCell``, use
  ``reset="after"``), ``"lstm"`` (``LSTMCell`` or ``OptimizedLSTMCell``).
  """
  if kind not in _GATES:
    raise ValueError(f"from_flax: unknown kind {kind!r}; expected one of {sorted(_GATES)}")
  cat = lambda arrs: jnp.concatenate(arrs, axis=-1)
  zeros_like_bias = lambda name: jnp.zeros(params[name]["kernel"].shape[-1],
                                           params[name]["kernel"].dtype)
  bias = lambda name: params[name].get("bias", zeros_like_bias(name))
  if kind == "elman":
    return ElmanParams(params["i"]["kernel"], params["h"]["kernel"],
                       params["i"]["bias"] + params["h"].get("bias", 0.0))
  gates = _GATES[kind]
  w_x = cat([params["i" + g]["kernel"] for g in gates])
  w_h = cat([params["h" + g]["kernel"] for g in gates])
  if kind == "gru":
    b = cat([bias("ir") + bias("hr"), bias("iz") + bias("hz"), bias("in")])
    return GRUParams(w_x, w_h, b, bias("hn"))
  return LSTMParams(w_x, w_h, cat([bias("i" + g) + bias("h" + g) for g in gates]))
