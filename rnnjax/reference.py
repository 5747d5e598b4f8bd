"""Teaching references: the lecture's formulas, written out literally.

They are slow on purpose (every product of step Jacobians formed explicitly)
and serve to check the fast paths against the text they come from.
"""

from rnnjax._src.bptt import reference_elman_grads as reference_elman_grads

__all__ = ["reference_elman_grads"]
