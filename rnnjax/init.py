"""Initialisers for recurrent weights, in the `jax.nn.initializers` signature.

Every initialiser is ``init(key, shape, dtype) -> array``. The recurrent
matrix of a gated cell, ``w_h: [H, kH]``, is initialised block by block
(each ``[H, H]`` gate block on its own) by `blockwise`, as flax does with
one Dense per gate.

* `orthogonal` (default): ``Wᵀ W = I``; every singular value is 1, so the
  linear part of ``∂h_j/∂h_{j-1} = diag(f'(z_j)) W`` neither grows nor
  shrinks a gradient (Saxe et al. 2014).
* `identity`: ``W = scale·I``, the IRNN of Le, Jaitly & Hinton (2015), meant
  for ReLU RNNs.
* `gaussian(gain)`: ``W_ij ~ N(0, g²/H)``; spectral radius ≈ g for large H, the
  chaos studies' ensemble (Sompolinsky, Crisanti & Sommers 1988).
* `glorot_uniform`, `lecun_normal`: jax's, for the input weights.
* `chrono_bias`: Tallec & Ollivier (2018): forget bias ``log U[1, T_max-1]``.
"""

from rnnjax._src.init import Initializer as Initializer
from rnnjax._src.init import blockwise as blockwise
from rnnjax._src.init import chrono_bias as chrono_bias
from rnnjax._src.init import gaussian as gaussian
from rnnjax._src.init import glorot_uniform as glorot_uniform
from rnnjax._src.init import identity as identity
from rnnjax._src.init import in_float32 as in_float32
from rnnjax._src.init import lecun_normal as lecun_normal
from rnnjax._src.init import orthogonal as orthogonal
from rnnjax._src.init import zeros as zeros

__all__ = [
  "Initializer",
  "blockwise",
  "chrono_bias",
  "gaussian",
  "glorot_uniform",
  "identity",
  "in_float32",
  "lecun_normal",
  "orthogonal",
  "zeros",
]
