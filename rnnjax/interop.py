"""Weights between rnnjax params and PyTorch layers (both ways) and flax cells.

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

The other way, `to_torch` writes a whole (multi-layer, bidirectional,
projected) stack as PyTorch's ``state_dict()``, a dict of NumPy arrays under
PyTorch's keys, without importing torch. rnnjax keeps one bias where PyTorch
has two, so `to_torch` puts it all in ``bias_ih`` (``bias_hh`` is zeros, but
for the GRU's ``b_hn`` in its last third). Hence the round trips:

* rnnjax → PyTorch → rnnjax gives back the very same params (bit for bit);
* PyTorch → rnnjax → PyTorch gives back every weight bit for bit and the
  sums ``bias_ih + bias_hh`` (the GRU's ``n`` block: each of the two), so
  the module computes the same function.

Shape checks name the key and the shape PyTorch's layout needs there.
"""

from rnnjax._src.interop import carries_from_torch as carries_from_torch
from rnnjax._src.interop import carries_to_torch as carries_to_torch
from rnnjax._src.interop import from_flax as from_flax
from rnnjax._src.interop import from_torch as from_torch
from rnnjax._src.interop import to_torch as to_torch

__all__ = [
  "carries_from_torch",
  "carries_to_torch",
  "from_flax",
  "from_torch",
  "to_torch",
]
