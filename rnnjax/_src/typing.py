"""Type aliases and the typed contract of a cell, defined once.

Dimension letters, used in every shape comment and docstring of rnnjax:
``T`` time, ``B`` batch, ``I`` input features, ``H`` hidden units,
``S`` the flattened state size (``H``, or ``2H`` for the LSTM's ``[h; c]``),
``k`` gate blocks of a cell (1 Elman, 3 GRU, 4 LSTM), ``V`` vocabulary.

Each function of `rnnjax.Cell` and of its private compiled form
(`rnnjax._src.cells.base.Compiled`) is typed by one `typing.Protocol` below, whose
``__call__`` docstring is the slot's contract (optax's ``TransformInitFn``
style). The engine calls every slot but ``init`` and ``initial_carry``
positionally, so those Protocols take positional-only parameters and an
implementation may name its own as it likes.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

Array = jax.Array
"""A JAX array (NumPy arrays are accepted wherever an input is read)."""

PyTree = Any
"""Any pytree: nested tuples, NamedTuples, dicts and lists of arrays."""

Params = Any
"""A cell's weights: a NamedTuple pytree such as `rnnjax.LSTMParams`."""

Carry = Any
"""A cell's recurrent state for a batch: an array ``h: [..., H]`` or a
NamedTuple of them such as `rnnjax.LSTMCarry`."""

DType = Any
"""Anything ``jnp.dtype`` accepts."""

Shape = tuple[int, ...]
"""An array shape."""


class InitFn(Protocol):
  """`rnnjax.Cell.init`: fresh params for a given input size."""

  def __call__(self, key: Array, input_size: int) -> Params:
    """Fresh weights for inputs of ``input_size`` features.

    Args:
      key: a PRNG key (``jax.random.key(seed)``).
      input_size: I, the feature size of ``x``.

    Returns:
      The params pytree.
    """
    ...


class InitialCarryFn(Protocol):
  """`rnnjax.Cell.initial_carry`: the zero carry for a batch shape."""

  def __call__(self, batch_shape: Shape = (), dtype: DType = ...) -> Carry:
    """The zero carry.

    Args:
      batch_shape: leading axes, ``(B,)`` for a batch or ``()`` for one
        sequence.
      dtype: the carry's dtype (float32 by default).

    Returns:
      A carry whose leaves have shape ``[*batch_shape, H]``.
    """
    ...


class StepFn(Protocol):
  """`rnnjax.Cell.step`: one step of the recurrence, input to output."""

  def __call__(self, params: Params, carry: Carry, x: Array, /) -> tuple[Carry, Array]:
    """One step of the recurrence, in the ``lax.scan`` body order.

    Args:
      params: the cell's params.
      carry: the previous carry (leaves ``[..., H]``).
      x: the input ``[..., I]``.

    Returns:
      ``(carry, y)``: the new carry and the output ``y = h: [..., H]``.
    """
    ...


class ProjectFn(Protocol):
  """`rnnjax.Cell.project`: the input projection, hoisted out of the loop."""

  def __call__(self, params: Params, x: Array, /) -> Array:
    """The input projection ``zx = x @ w_x + b``.

    The one part of a step that does not depend on the carry, so the scan
    kernel computes it for all ``T·B`` rows in a single matmul.

    Args:
      params: the cell's params.
      x: inputs ``[..., I]``.

    Returns:
      ``zx: [..., kH]``, accumulated in float32 for 16-bit compute dtypes.
    """
    ...


class FastStepFn(Protocol):
  """`rnnjax.Cell.fast_step`: one step of the recurrence given ``zx``."""

  def __call__(self, params: Params, carry: Carry, zx: Array, /) -> tuple[Carry, Any]:
    """One step given the projected input.

    ``step(params, carry, x)`` is ``fast_step(params, carry, project(params, x))``
    with ``y = step_output(carry, residuals)``.

    Args:
      params: the cell's params.
      carry: the previous carry ``[B, ...]``.
      zx: ``project(params, x_t)``, ``[B, kH]``.

    Returns:
      ``(carry, residuals)``: the new carry and what `BackwardStepFn` needs
      beyond the carries (gate values), or ``None``.
    """
    ...


class BackwardStepFn(Protocol):
  """`rnnjax.Cell.backward_step`: the local backward of one step.

  `rnnjax.custom_cell` builds it from the cell's hints: ``jax.vjp`` of the
  step (no hints, or `rnnjax.RecurrentMatmul`), or the user's own
  `rnnjax.LocalBackward`.
  """

  def __call__(
    self, params: Params, carry_prev: Carry, carry: Carry, residuals: Any, dcarry: Any, /
  ) -> tuple[Carry, Array, Any, list[Array | None] | None]:
    """The local backward of one step (the hand-written BPTT's body).

    Args:
      params: the cell's params.
      carry_prev: the carry before the step.
      carry: the carry after it.
      residuals: what `FastStepFn` returned for the step.
      dcarry: the pair ``(∂L/∂carry_t, ∂L_t/∂y_t)``.

    Returns:
      ``(dcarry_prev, dzx, rows, dleaves)``: ``∂L/∂carry_{t-1}``; the gradient
      of the projected input ``zx: [B, kH]`` (it feeds the projection's params
      and the inputs through one VJP over all rows); ``rows``, per-row arrays
      (``dzh``) that `RecurrentGradsFn` turns into weight gradients over all
      rows, or None without that rule (``dzx`` itself when they agree); and
      ``dleaves``, this step's params gradient as one entry per params leaf
      (None where the step adds nothing), summed by the reverse scan, or None.
    """
    ...


class RecurrentGradsFn(Protocol):
  """`rnnjax.Cell.recurrent_grads`: the recurrent weights' gradients."""

  def __call__(
    self, params: Params, carry_prev: Carry, residuals: Any, rows: Any, /
  ) -> dict[str, Array]:
    """The recurrent weights' gradients over all ``N = T·B`` rows at once.

    Args:
      params: the cell's params.
      carry_prev: every step's previous carry, flattened to ``[N, ...]``.
      residuals: every step's residuals, flattened to ``[N, ...]``.
      rows: what `BackwardStepFn` returned as ``rows`` for every step,
        flattened to ``[N, ...]`` (the recurrent pre-activation's gradient
        ``dZh: [N, kH]``).

    Returns:
      ``{field: gradient}`` for the params fields the recurrence uses
      (``w_h``, and ``b_hn`` for the reset-after GRU), e.g.
      ``dw_h = H_prevᵀ dZh``; the BPTT adds each to the field's other
      gradients.
    """
    ...


class StateJacobianFn(Protocol):
  """`rnnjax.Cell.state_jacobian`: the closed-form step Jacobian."""

  def __call__(self, params: Params, carry: Carry, x: Array, /) -> Array:
    """The closed-form step Jacobian ``∂s_t/∂s_{t-1}`` for one example.

    Args:
      params: the cell's params.
      carry: the previous carry, unbatched (leaves ``[H]``).
      x: the input ``[I]``.

    Returns:
      ``[S, S]``, over the flattened state ``s`` (the carry's leaves
      concatenated in order).
    """
    ...


class StateDiagonalFn(Protocol):
  """`rnnjax.Cell.state_diagonal`: the closed-form diagonal of the step Jacobian."""

  def __call__(self, params: Params, carry: Carry, x: Array, /) -> Array:
    """The diagonal of ``∂s_t/∂s_{t-1}`` for one example.

    Args:
      params: the cell's params.
      carry: the previous carry, unbatched (leaves ``[H]``).
      x: the input ``[I]``.

    Returns:
      ``[S]``: ``∂s_t[i]/∂s_{t-1}[i]`` over the flattened state ``s`` (the
      carry's leaves concatenated in order), what quasi-DEER and quasi-ELK use.
    """
    ...


class OutputFn(Protocol):
  """`rnnjax.Cell.output`: the per-step output read from a carry."""

  def __call__(self, carry: Carry, /) -> Array:
    """The per-step output of a carry.

    Args:
      carry: a carry (leaves ``[..., H]``).

    Returns:
      ``y = h: [..., H]``.
    """
    ...


class StepOutputFn(Protocol):
  """The ``step_output`` slot: a step's output from its carry and residuals."""

  def __call__(self, carry: Carry, residuals: Any, /) -> Array:
    """The output ``y: [..., O]`` of a step.

    Args:
      carry: the carry after the step.
      residuals: what `FastStepFn` returned for the step.

    Returns:
      ``y``.
    """
    ...
