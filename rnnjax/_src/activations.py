"""Activations that a cell can declare, with what the Jacobian tools need.

A vanilla RNN ``h = f(z)`` has the step Jacobian ``diag(f'(z)) W``; each
`Activation` writes ``f'`` in terms of the output ``h = f(z)`` (so backward
passes need not keep ``z``) and states ``γ = sup |f'|``, the constant of
Pascanu, Mikolov & Bengio (2013): ``σ_max(W) < 1/γ`` is sufficient for
vanishing gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src.typing import Array


class Activation(NamedTuple):
  """An elementwise nonlinearity with its derivative and the bound on it.

  Attributes:
    name: how `rnnjax.elman` names it.
    fn: ``f``, elementwise.
    grad_from_output: ``h ↦ f'(f⁻¹(h))``, the derivative written in terms
      of the output.
    gamma: ``γ = sup_z |f'(z)|``.
  """

  name: str
  fn: Callable[[Array], Array]
  grad_from_output: Callable[[Array], Array]
  gamma: float


def _relu_grad(h: Array) -> Array:
  return (h > 0).astype(h.dtype)


ACTIVATIONS: dict[str, Activation] = {
  "tanh": Activation("tanh", jnp.tanh, lambda h: 1.0 - h * h, 1.0),
  "relu": Activation("relu", jax.nn.relu, _relu_grad, 1.0),
  "sigmoid": Activation("sigmoid", jax.nn.sigmoid, lambda h: h * (1.0 - h), 0.25),
  "linear": Activation("linear", lambda z: z, jnp.ones_like, 1.0),
}
