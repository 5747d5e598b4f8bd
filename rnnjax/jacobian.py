"""Jacobian tools: why gradients explode or vanish, measured.

The lecture's chain: ``h_j = f(z_j)``, ``z_j = V x_j + W h_{j-1} + b``:

    ∂h_j/∂h_{j-1} = diag(f'(z_j)) W                       (the step Jacobian J_j)
    ‖J_j‖ ≤ ‖diag f'(z_j)‖ · ‖W‖                           (the lecture's bound)
    ∂L_T/∂h_k = ∂L_T/∂h_T · J_T J_{T-1} ⋯ J_{k+1}           (products over the lag T − k)

Products of norms above 1 explode, below 1 vanish. Pascanu, Mikolov & Bengio
(2013): with ``|f'| ≤ γ`` (γ = 1 for tanh, 1/4 for sigmoid), ``σ_max(W) < 1/γ``
is sufficient for vanishing and ``σ_max(W) > 1/γ`` necessary for exploding.

The tools read what a cell declares, never its name: a cell whose step is
``h = f(zx + h_{t-1} w_h)`` declares its `rnnjax.Activation` (with ``γ``), and
gets the lecture's bound and Pascanu's conditions; every cell gets the
measured step Jacobians, their norms, products, spectra and Lyapunov
exponents.

Everything here works on one sequence (``xs: [T, I]``); vmap for batches.
States are flattened: ``s = h`` (S = H), or ``s = [h; c]`` for the LSTM (S = 2H).
Products of many Jacobians are never formed naively: norms are carried in log
space with a running normalisation, and the Lyapunov spectrum uses the QR
(Benettin) method.
"""

from rnnjax._src.jacobian import CHOLESKY_ORTHOGONALITY_TOL as CHOLESKY_ORTHOGONALITY_TOL
from rnnjax._src.jacobian import QR_METHODS as QR_METHODS
from rnnjax._src.jacobian import SIGMA_RTOL as SIGMA_RTOL
from rnnjax._src.jacobian import PascanuConditions as PascanuConditions
from rnnjax._src.jacobian import diagnose as diagnose
from rnnjax._src.jacobian import flatten_state as flatten_state
from rnnjax._src.jacobian import gradient_norms_vs_lag as gradient_norms_vs_lag
from rnnjax._src.jacobian import isometry as isometry
from rnnjax._src.jacobian import lecture_bound as lecture_bound
from rnnjax._src.jacobian import log_product_norms as log_product_norms
from rnnjax._src.jacobian import log_singular_values as log_singular_values
from rnnjax._src.jacobian import lyapunov_spectrum as lyapunov_spectrum
from rnnjax._src.jacobian import max_lyapunov_perturbation as max_lyapunov_perturbation
from rnnjax._src.jacobian import norms as norms
from rnnjax._src.jacobian import parallel_outlook as parallel_outlook
from rnnjax._src.jacobian import parallel_prediction as parallel_prediction
from rnnjax._src.jacobian import pascanu_conditions as pascanu_conditions
from rnnjax._src.jacobian import product_norm_power as product_norm_power
from rnnjax._src.jacobian import step_jacobians as step_jacobians
from rnnjax._src.jacobian import trajectory as trajectory
from rnnjax._src.jacobian import unflatten_state as unflatten_state
from rnnjax._src.jacobian import window_spectra as window_spectra

__all__ = [
  "PascanuConditions",
  "diagnose",
  "flatten_state",
  "gradient_norms_vs_lag",
  "isometry",
  "lecture_bound",
  "log_product_norms",
  "log_singular_values",
  "lyapunov_spectrum",
  "max_lyapunov_perturbation",
  "norms",
  "parallel_outlook",
  "parallel_prediction",
  "pascanu_conditions",
  "product_norm_power",
  "step_jacobians",
  "trajectory",
  "unflatten_state",
  "window_spectra",
]
