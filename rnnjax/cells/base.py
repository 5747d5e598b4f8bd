"""What every cell supplies: the `Cell` NamedTuple of pure functions.

A cell is not an object with state. It is a record of pure functions (optax
style) that the generic runner (`rnnjax.scan`), the generic hand-written BPTT
(`rnnjax.bptt`) and the Jacobian tools (`rnnjax.jacobian`) call:

* ``init(key, input_size) -> params``      a NamedTuple pytree of weights;
* ``initial_carry(batch_shape=(), dtype=float32) -> carry``  zeros;
* ``step(params, carry, x) -> (carry, y)``  the readable reference step, in the
  scan-body order, so ``lax.scan(partial(cell.step, params), carry, xs)`` works;
* ``fast_step(params, carry, zx) -> (carry, res)``  the same step given the
  hoisted input projection ``zx = x @ w_x + b``; ``res`` holds what the
  backward needs beyond the carries;
* ``backward_step(params, carry_prev, carry, res, dcarry) -> (dcarry_prev, dzx, dzh)``
  the local backward of one step: the gradient of the input pre-activation
  ``dzx`` (feeds ``w_x``, ``b`` and ``xs``), of the recurrent pre-activation
  ``dzh`` (feeds ``w_h``) and of the previous carry;
* ``recurrent_grads(params, carry_prev, res, dzh) -> dict`` the recurrent weight
  gradients over all ``N = T*B`` rows at once (``dw_h = H_prevᵀ dZh``);
* ``state_jacobian(params, carry, x) -> [S, S]`` the closed-form Jacobian of
  the flattened new state with respect to the flattened previous state, for
  one example (``carry`` unbatched, ``x: [I]``; vmap for batches);
* ``output(carry) -> h`` and ``add_output_grad(dcarry, dy)`` connect the
  carry to the per-step output ``y = h``.

Weight layout is row-vector (``x @ w_x``): ``w_x: [I, kH]``, ``w_h: [H, kH]``,
``b: [kH]`` with the ``k`` gate blocks side by side along the last axis.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = Any
PyTree = Any


class Cell(NamedTuple):
  """A recurrent cell as a NamedTuple of pure functions (see module docstring)."""

  name: str
  hidden_size: int
  gates: int
  init: Callable[..., PyTree]
  initial_carry: Callable[..., PyTree]
  step: Callable[..., tuple]
  fast_step: Callable[..., tuple]
  backward_step: Callable[..., tuple]
  recurrent_grads: Callable[..., dict]
  state_jacobian: Callable[..., Array]
  output: Callable[[PyTree], Array]
  add_output_grad: Callable[[PyTree, Array], PyTree]
  state_size: int
  options: tuple = ()
  dtype: Any = None

  def __repr__(self) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
    return f"rnnjax.{self.name}({self.hidden_size}{', ' + opts if opts else ''})"


def compute_dtypes(dtype, *arrays):
  """(compute, accumulate) dtypes: compute is `dtype` or the arrays' result
  type; accumulation is float32 for 16-bit compute types, else compute."""
  compute = jnp.dtype(dtype) if dtype is not None else jnp.result_type(*arrays)
  acc = jnp.float32 if jnp.finfo(compute).bits < 32 else compute
  return compute, jnp.dtype(acc)


def mm(a, b, acc):
  """`a @ b` accumulated in `acc` (float32 for bfloat16 inputs)."""
  return jnp.matmul(a, b, preferred_element_type=acc)


def bias(b, like, acc):
  """``b: [n]`` cast to ``acc`` and shaped to broadcast against ``like: [..., n]``
  without rank promotion (the tests run with ``jax_numpy_rank_promotion="raise"``)."""
  return b.astype(acc).reshape((1,) * (like.ndim - 1) + b.shape)


def hidden_output(carry):
  return carry


def hidden_add_grad(dcarry, dy):
  return dcarry + dy


def concrete(x):
  """``x`` as a NumPy array when its value is known at trace time, else None."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
          jax.errors.TracerIntegerConversionError):
    return None


def check_positive_int(name, value, what):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"{what}: {name} must be a positive int, got {value!r}")


def check_choice(name, value, choices, what):
  if value not in choices:
    raise ValueError(
        f"{what}: unknown {name} {value!r}; expected one of {sorted(choices)}")
