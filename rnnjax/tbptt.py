"""Truncated BPTT (Williams & Peng 1990) for training on long streams.

TBPTT(k1, k2): every ``k1`` steps, backpropagate through the last ``k2``
steps. Window ``u`` ends at ``stop = (u+1)·k1`` and starts at
``start = stop − k2``; its loss is taken on the last ``k1`` steps
``[stop − k1, stop)``, and its initial carry is the carry at ``start``
with the gradient stopped. When ``k2 > k1`` the carry at the next window's
start (``stop + k1 − k2``) comes from a forward-only scan over the first ``k1``
steps of the window. ``k1 = k2`` is plain chunked BPTT with the carry passed
between chunks.

Episode resets (``resets: [T, B]`` bool, as in `rnnjax.scan`) are sliced per
window like ``xs``; a reset restarts the episode from the cell's initial carry
(zeros for the built-ins, or ``run_window``'s ``reset_carry``), as one
`rnnjax.scan` over the whole stream would, never from the window's or the
stream's starting carry.
"""

from rnnjax._src.tbptt import TruncatedBPTT as TruncatedBPTT
from rnnjax._src.tbptt import Window as Window
from rnnjax._src.tbptt import truncated_bptt as truncated_bptt
from rnnjax._src.tbptt import windows as windows

__all__ = [
  "TruncatedBPTT",
  "Window",
  "truncated_bptt",
  "windows",
]
