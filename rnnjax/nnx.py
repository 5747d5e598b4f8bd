"""flax NNX modules over rnnjax cells: a drop-in for ``nnx.RNN``, a
bidirectional layer and a stack.

Flax code that builds ``nnx.RNN(nnx.OptimizedLSTMCell(I, H, rngs=rngs))``
changes one line to run rnnjax's kernels (the hoisted input projection and the
hand-written BPTT of `rnnjax.scan`)::

    rnn = rnnjax.nnx.RNN(rj.lstm(H), I, rngs=rngs)   # was nnx.RNN(nnx.OptimizedLSTMCell(I, H, ...))
    ys = rnn(xs, seq_lengths=lengths)                 # xs: [B, T, I] -> ys: [B, T, H]

The modules mirror flax's names and conventions: batch-major ``[B, T, I]``
unless ``time_major=True``; ``reverse``, ``keep_order``, ``return_carry``,
``initial_carry`` and ``seq_lengths`` mean what they mean for ``nnx.RNN``,
with one difference on padding: rnnjax zeros the outputs at ``t >=
seq_lengths[b]`` (and leaves them in place), where flax returns whatever the
cell computed on the padding. On valid steps, and for the returned carry of
every sequence with ``seq_lengths >= 1``, the two agree (at length 0 flax
returns its last step's carry, rnnjax the initial one). The LSTM's carry is
``rj.LSTMCarry(h, c)`` where flax's is ``(c, h)``: a plain tuple given as an
LSTM's ``initial_carry`` is refused, so the two cannot be swapped silently.

The params live in the module as the cell's own params NamedTuple with an
``nnx.Param`` at each leaf (``rnn.params.w_x``, ``rnn.params.b``), so
``nnx.state(rnn)`` has the paths ``('params', 'w_x')``, ... that optax,
``nnx.Optimizer``, ``nnx.split``/``nnx.merge`` and checkpointing see as
ordinary leaves. The cell itself is static (a `rnnjax.Cell` has no leaves):
it goes into the graph definition.

`LinenRNN` is the same wrapper as a ``flax.linen`` module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as linen
import jax
import jax.numpy as jnp
from flax import nnx

import rnnjax as rj
from rnnjax import Array, Carry, Cell, Params

__all__ = ["RNN", "Bidirectional", "LinenRNN", "Stacked"]

Merge = Callable[[Array, Array], Array]
"""How a bidirectional layer joins ``ys_fwd`` and ``ys_bwd``, flax's ``merge_fn``."""


def _concatenate(a: Array, b: Array) -> Array:
  """The default ``merge_fn``: ``[..., H_f] ++ [..., H_b] -> [..., H_f + H_b]``."""
  return jnp.concatenate([a, b], axis=-1)


def _run(
  cell: Cell,
  params: Params,
  inputs: Array,
  initial_carry: Carry | None,
  seq_lengths: Array | None,
  *,
  time_major: bool,
  reverse: bool,
  keep_order: bool,
  unroll: int = 1,
  backward: str = "auto",
  kernel: str = "auto",
) -> tuple[Carry, Array]:
  """`rnnjax.scan` with flax's ``reverse``/``keep_order`` conventions.

  ``rj.scan(..., reverse=True)`` returns ``ys[t]`` aligned with ``xs[t]``,
  which is flax's ``keep_order=True``. With ``keep_order=False`` flax returns
  the outputs in processing order, ``ys[t]`` the output of the step that read
  ``xs[len - 1 - t]``; `rnnjax.flip` puts them there (inside each length; the
  zeroed padding stays in place).
  """
  carry, ys = rj.scan(
    cell,
    params,
    inputs,
    initial_carry,
    lengths=seq_lengths,
    reverse=reverse,
    time_major=time_major,
    unroll=unroll,
    backward=backward,  # type: ignore[arg-type]
    kernel=kernel,  # type: ignore[arg-type]
  )
  if reverse and not keep_order:
    ys_tm = ys if time_major else jnp.swapaxes(ys, 0, 1)
    ys_tm = rj.flip(ys_tm, None if seq_lengths is None else jnp.asarray(seq_lengths))
    ys = ys_tm if time_major else jnp.swapaxes(ys_tm, 0, 1)
  return carry, ys


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def _check_cell(cell: Any, in_features: Any, what: str) -> None:
  if not isinstance(cell, Cell):
    raise TypeError(
      f"{what}: cell must be an rnnjax Cell (rj.lstm(H), rj.gru(H), rj.custom_cell(...)), "
      f"got {type(cell).__name__}; flax cells go in flax.nnx.RNN"
    )
  if not isinstance(in_features, int) or isinstance(in_features, bool) or in_features < 1:
    raise ValueError(f"{what}: in_features must be a positive int, got {in_features!r}")


def _output_size(cell: Cell, params: Params, in_features: int, what: str) -> int:
  """O, the last axis of ``ys``, by ``jax.eval_shape`` of one step of
  `rnnjax.scan` (which checks ``params`` against the cell, naming the leaf)."""
  x = jax.ShapeDtypeStruct((1, 1, in_features), jnp.float32)
  try:
    _, ys = jax.eval_shape(lambda p, x: rj.scan(cell, p, x), params, x)
  except ValueError as e:
    raise ValueError(
      f"{what}: params do not fit {cell!r} with in_features={in_features} "
      f"(rnnjax.scan of xs: [B, T, {in_features}] says: {e})"
    ) from e
  return int(ys.shape[-1])


class RNN(nnx.Module):
  """An rnnjax cell run over a sequence, as ``flax.nnx.RNN`` runs a flax cell.

  Each call is `rnnjax.scan` of ``cell`` with this module's params, so the
  values and gradients are those of the functional API (the tests hold them
  equal), and flax's conventions map onto it:

  * ``time_major``: default False, ``[B, T, I]``, as ``rj.scan(time_major=False)``;
  * ``seq_lengths``: `rnnjax.scan`'s ``lengths``: the carry after each
    sequence's last valid step; padded outputs are zeros (flax returns what
    its cell computed on the padding);
  * ``reverse``: each sequence runs backwards inside its length;
  * ``keep_order``: False (default) returns a reversed run's outputs in
    processing order, as flax does; True aligns ``ys[t]`` with ``xs[t]``;
  * ``initial_carry``: the cell's carry, default zeros; for the LSTM
    ``rj.LSTMCarry(h, c)``, where flax's is ``(c, h)``.

  Attributes:
    cell: the `rnnjax.Cell` (static).
    in_features: I.
    out_features: O, the size of the outputs (``cell.hidden_size`` for the
      built-in cells).
    params: the cell's params NamedTuple (or pytree) with an ``nnx.Param``
      at each leaf.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj, rnnjax.nnx
    >>> from flax import nnx
    >>> rnn = rj.nnx.RNN(rj.lstm(4), 3, rngs=nnx.Rngs(0))
    >>> rnn(jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 2])).shape
    (2, 5, 4)
    >>> carry, ys = rnn(jnp.ones((2, 5, 3)), return_carry=True)
    >>> carry.h.shape, rnn.params.w_x.shape
    ((2, 4), (3, 16))
  """

  def __init__(
    self,
    cell: Cell,
    in_features: int,
    *,
    rngs: nnx.Rngs | None = None,
    params: Params | None = None,
    time_major: bool = False,
    reverse: bool = False,
    keep_order: bool = False,
    return_carry: bool = False,
    unroll: int = 1,
    backward: str = "auto",
    kernel: str = "auto",
  ):
    """Wrap ``cell`` with fresh params (from ``rngs``) or given ``params``.

    Args:
      cell: any `rnnjax.Cell`: built-in (``rj.lstm(H)``) or
        ``rj.custom_cell(...)``.
      in_features: I, the inputs' feature size.
      rngs: draws the params, ``cell.init(rngs.params(), in_features)``.
      params: the cell's params instead (e.g. from `rnnjax.interop`).
      time_major: inputs and outputs are ``[T, B, ·]`` instead of ``[B, T, ·]``.
      reverse: run each sequence backwards (inside its length).
      keep_order: with ``reverse``, return ``ys[t]`` aligned with
        ``xs[t]`` instead of in processing order.
      return_carry: return ``(carry, ys)`` instead of ``ys``.
      unroll: `rnnjax.scan`'s ``lax.scan`` unroll factor.
      backward: `rnnjax.scan`'s backward mode (``"auto"``, ``"bptt"``,
        ``"autodiff"``, ``"checkpoint"``).
      kernel: `rnnjax.scan`'s time-loop kernel (``"auto"``, ``"xla"``,
        ``"pallas"``).

    Raises:
      TypeError: ``cell`` is not a `rnnjax.Cell`.
      ValueError: neither or both of ``rngs`` and ``params`` are given,
        ``in_features`` is not a positive int, or ``params`` do not fit the
        cell (the message names the leaf and its expected shape).
    """
    what = "rnnjax.nnx.RNN"
    _check_cell(cell, in_features, what)
    if (rngs is None) == (params is None):
      raise ValueError(
        f"{what}: pass rngs=nnx.Rngs(seed) for fresh params or params=... "
        f"(e.g. from rj.interop), not {'both' if rngs is not None else 'neither'}"
      )
    if params is None:
      assert rngs is not None
      params = cell.init(rngs.params(), in_features)
    self.out_features = _output_size(cell, params, in_features, what)
    self.cell = cell
    self.in_features = in_features
    self.params = nnx.data(jax.tree.map(nnx.Param, params))
    self.time_major = time_major
    self.reverse = reverse
    self.keep_order = keep_order
    self.return_carry = return_carry
    self.unroll = unroll
    self.backward = backward
    self.kernel = kernel

  def to_layer(self) -> tuple[Cell, Params]:
    """``(cell, params)`` with the params as arrays: a layer of the
    functional API (`rnnjax.scan`, `rnnjax.stacked`, `rnnjax.interop.to_torch`)."""
    return self.cell, jax.tree.map(lambda v: v.get_value(), self.params, is_leaf=_is_variable)

  def __call__(
    self,
    inputs: Array,
    *,
    initial_carry: Carry | None = None,
    seq_lengths: Array | None = None,
    return_carry: bool | None = None,
    time_major: bool | None = None,
    reverse: bool | None = None,
    keep_order: bool | None = None,
    rngs: Any = None,
  ) -> Array | tuple[Carry, Array]:
    """Run the cell over ``inputs``.

    Args:
      inputs: ``[B, T, I]`` (``[T, B, I]`` with ``time_major``), floating.
      initial_carry: the cell's carry for batch ``B`` (default zeros).
      seq_lengths: optional ``[B]`` ints in ``[0, T]`` (`rnnjax.scan`'s rule:
        out of range they raise eagerly and are clipped under ``jit``).
      return_carry: overrides the module's flag for this call; so do
        ``time_major``, ``reverse`` and ``keep_order``.
      time_major: see ``return_carry``.
      reverse: see ``return_carry``.
      keep_order: see ``return_carry``.
      rngs: unused (an rnnjax carry starts at zeros or ``initial_carry``);
        accepted so that ``flax.nnx.Bidirectional`` can drive this module.

    Returns:
      ``ys: [B, T, O]`` (``[T, B, O]`` with ``time_major``), zero at padded
      steps, or ``(carry, ys)`` with ``return_carry``, the carry after each
      sequence's last valid step.

    Raises:
      TypeError, ValueError: from `rnnjax.scan`, naming the argument, its
        shape and the fix.
    """
    del rngs
    cell, params = self.to_layer()
    plain = isinstance(initial_carry, tuple) and not hasattr(initial_carry, "_fields")
    if plain and isinstance(cell.initial_carry(()), rj.LSTMCarry):
      raise ValueError(
        "rnnjax.nnx.RNN: initial_carry is a plain tuple, but this cell's carry is "
        "rj.LSTMCarry(h, c); flax's LSTM carry is (c, h), so pass "
        "rj.LSTMCarry(h=h, c=c) to say which is which"
      )
    carry, ys = _run(
      cell,
      params,
      inputs,
      initial_carry,
      seq_lengths,
      time_major=self.time_major if time_major is None else time_major,
      reverse=self.reverse if reverse is None else reverse,
      keep_order=self.keep_order if keep_order is None else keep_order,
      unroll=self.unroll,
      backward=self.backward,
      kernel=self.kernel,
    )
    want_carry = self.return_carry if return_carry is None else return_carry
    return (carry, ys) if want_carry else ys


class Bidirectional(nnx.Module):
  """A forward and a backward RNN over the same inputs, outputs merged.

  The same contract as ``flax.nnx.Bidirectional``: the backward RNN runs with
  ``reverse=True, keep_order=True``, so ``ys[t]`` of both directions belongs to
  ``xs[t]``, and the backward direction starts at each sequence's last valid
  step. It equals `rnnjax.bidirectional` with ``merge="concat"`` for the
  default ``merge_fn``. The two RNNs may be `RNN` modules of any rnnjax cells
  (or anything called as ``rnn(xs, initial_carry=, seq_lengths=,
  return_carry=, time_major=, reverse=, keep_order=)``).

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj, rnnjax.nnx
    >>> from flax import nnx
    >>> rngs = nnx.Rngs(0)
    >>> bi = rj.nnx.Bidirectional(
    ...   rj.nnx.RNN(rj.gru(4), 3, rngs=rngs), rj.nnx.RNN(rj.lstm(2), 3, rngs=rngs))
    >>> bi(jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 3])).shape
    (2, 5, 6)
  """

  def __init__(
    self,
    forward_rnn: RNN,
    backward_rnn: RNN,
    *,
    merge_fn: Merge = _concatenate,
    time_major: bool = False,
    return_carry: bool = False,
  ):
    """Join two RNN modules.

    Args:
      forward_rnn: the forward direction.
      backward_rnn: the backward direction (a separate module, or the params
        are shared).
      merge_fn: ``merge_fn(ys_fwd, ys_bwd) -> ys``, default concatenation on
        the last axis.
      time_major: inputs and outputs are ``[T, B, ·]``.
      return_carry: return ``((carry_fwd, carry_bwd), ys)``.
    """
    self.forward_rnn = forward_rnn
    self.backward_rnn = backward_rnn
    self.merge_fn = merge_fn
    self.time_major = time_major
    self.return_carry = return_carry

  @property
  def out_features(self) -> int:
    """O, the last axis of the merged outputs."""
    f, b = self.forward_rnn.out_features, self.backward_rnn.out_features
    out = jax.eval_shape(
      self.merge_fn,
      jax.ShapeDtypeStruct((1, 1, f), jnp.float32),
      jax.ShapeDtypeStruct((1, 1, b), jnp.float32),
    )
    return int(out.shape[-1])

  def __call__(
    self,
    inputs: Array,
    *,
    initial_carry: tuple[Carry, Carry] | None = None,
    seq_lengths: Array | None = None,
    return_carry: bool | None = None,
    time_major: bool | None = None,
    reverse: bool | None = None,
    keep_order: bool | None = None,
    rngs: Any = None,
  ) -> Array | tuple[tuple[Carry, Carry], Array]:
    """Run both directions.

    Args:
      inputs: ``[B, T, I]`` (``[T, B, I]`` with ``time_major``).
      initial_carry: optional ``(carry_fwd, carry_bwd)``.
      seq_lengths: optional ``[B]`` valid lengths.
      return_carry: overrides the module's flag for this call.
      reverse: unused, as in ``flax.nnx.Bidirectional`` (each direction's
        RNN fixes its own); accepted so flax call sites run unchanged.
      keep_order: unused, likewise.
      rngs: unused, likewise.
      time_major: overrides the module's flag for this call.

    Returns:
      ``ys = merge_fn(ys_fwd, ys_bwd)``, or ``((carry_fwd, carry_bwd), ys)``.
    """
    del reverse, keep_order, rngs
    tm = self.time_major if time_major is None else time_major
    c0f, c0b = (None, None) if initial_carry is None else initial_carry
    carry_f, ys_f = self.forward_rnn(
      inputs,
      initial_carry=c0f,
      seq_lengths=seq_lengths,
      return_carry=True,
      time_major=tm,
      reverse=False,
    )
    carry_b, ys_b = self.backward_rnn(
      inputs,
      initial_carry=c0b,
      seq_lengths=seq_lengths,
      return_carry=True,
      time_major=tm,
      reverse=True,
      keep_order=True,
    )
    ys = self.merge_fn(ys_f, ys_b)
    want_carry = self.return_carry if return_carry is None else return_carry
    return ((carry_f, carry_b), ys) if want_carry else ys


class Stacked(nnx.Module):
  """A deep RNN: one `RNN` (or `Bidirectional`) per cell, each layer's
  outputs the next layer's inputs, as `rnnjax.stacked`.

  ::

      h^(0) = xs,   h^(l) = RNN_l(h^(l-1)) [+ h^(l-1) if residual, l >= 1]
      [dropout between layers]

  Without dropout it equals ``rj.stacked(stack.to_layers(), xs,
  residual=..., time_major=False)``. Dropout is an ``nnx.Dropout`` after
  every layer but the last: active by default, off after ``model.eval()``.

  Attributes:
    layers: an ``nnx.List`` of `RNN` or `Bidirectional` modules.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj, rnnjax.nnx
    >>> from flax import nnx
    >>> stack = rj.nnx.Stacked([rj.lstm(4), rj.gru(4)], 3, rngs=nnx.Rngs(0), bidirectional=True)
    >>> carries, ys = stack(jnp.ones((2, 5, 3)), return_carry=True)
    >>> ys.shape, len(carries), stack.layers[1].forward_rnn.in_features
    ((2, 5, 8), 2, 8)
  """

  def __init__(
    self,
    cells: Sequence[Cell],
    in_features: int,
    *,
    rngs: nnx.Rngs,
    bidirectional: bool = False,
    merge_fn: Merge = _concatenate,
    residual: bool = False,
    dropout_rate: float = 0.0,
    time_major: bool = False,
    return_carry: bool = False,
    unroll: int = 1,
    backward: str = "auto",
  ):
    """Build one layer per cell, the input sizes chained.

    Args:
      cells: one `rnnjax.Cell` per layer (any cells, custom ones included).
      in_features: I of the first layer.
      rngs: draws every layer's params (and dropout's masks).
      bidirectional: make every layer a `Bidirectional` pair of ``cell``.
      merge_fn: how a bidirectional layer merges its directions.
      residual: add each layer's input to its output, from the second layer on.
      dropout_rate: dropout on the outputs of every layer but the last.
      time_major: inputs and outputs are ``[T, B, ·]``.
      return_carry: return ``(carries, ys)``.
      unroll: `rnnjax.scan`'s unroll factor, every layer.
      backward: `rnnjax.scan`'s backward mode, every layer.

    Raises:
      ValueError: ``cells`` is empty, ``dropout_rate`` lies outside
        ``[0, 1)``, or ``residual`` meets a layer whose input and output
        sizes differ.
    """
    what = "rnnjax.nnx.Stacked"
    if not cells:
      raise ValueError(f"{what}: cells is empty; pass a list such as [rj.lstm(H), rj.lstm(H)]")
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"{what}: dropout_rate must lie in [0, 1), got {dropout_rate}")
    layers: list[RNN | Bidirectional] = []
    size = in_features
    for l, cell in enumerate(cells):
      layer: RNN | Bidirectional
      if bidirectional:
        fwd, bwd = (RNN(cell, size, rngs=rngs, unroll=unroll, backward=backward) for _ in range(2))
        layer = Bidirectional(fwd, bwd, merge_fn=merge_fn)
      else:
        layer = RNN(cell, size, rngs=rngs, unroll=unroll, backward=backward)
      if residual and l > 0 and layer.out_features != size:
        raise ValueError(
          f"{what}: residual=True adds layer {l}'s input to its output, but {cell!r} "
          f"maps {size} features to {layer.out_features}; give every layer after the "
          f"first the same output size as its input, or residual=False"
        )
      layers.append(layer)
      size = layer.out_features
    self.layers = nnx.List(layers)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if dropout_rate else None
    self.residual = residual
    self.time_major = time_major
    self.return_carry = return_carry

  def to_layers(self) -> list[Any]:
    """The layers as `rnnjax.stacked` (and `rnnjax.interop.to_torch`) take
    them: ``(cell, params)``, or ``((cell, params_f), (cell, params_b))``."""
    out: list[Any] = []
    for layer in self.layers:
      if isinstance(layer, Bidirectional):
        out.append((layer.forward_rnn.to_layer(), layer.backward_rnn.to_layer()))
      else:
        out.append(layer.to_layer())
    return out

  def __call__(
    self,
    inputs: Array,
    *,
    initial_carry: Sequence[Carry] | None = None,
    seq_lengths: Array | None = None,
    return_carry: bool | None = None,
    time_major: bool | None = None,
  ) -> Array | tuple[list[Carry], Array]:
    """Run every layer.

    Args:
      inputs: ``[B, T, I]`` (``[T, B, I]`` with ``time_major``).
      initial_carry: optional list of carries, one per layer (a pair for a
        bidirectional layer).
      seq_lengths: optional ``[B]`` valid lengths, used by every layer.
      return_carry: overrides the module's flag for this call.
      time_major: overrides the module's flag for this call.

    Returns:
      The last layer's outputs, or ``(carries, ys)`` with one final carry per
      layer.

    Raises:
      ValueError: ``initial_carry`` has another length than ``layers``.
    """
    n = len(self.layers)
    if initial_carry is not None and len(initial_carry) != n:
      raise ValueError(
        f"rnnjax.nnx.Stacked: initial_carry has {len(initial_carry)} carries for {n} "
        f"layers; pass one per layer (a (fwd, bwd) pair for a bidirectional layer)"
      )
    tm = self.time_major if time_major is None else time_major
    carries, h = [], inputs
    for l, layer in enumerate(self.layers):
      c0 = None if initial_carry is None else initial_carry[l]
      carry, ys = layer(
        h, initial_carry=c0, seq_lengths=seq_lengths, return_carry=True, time_major=tm
      )
      if self.residual and l > 0:
        ys = ys + h
      if self.dropout is not None and l < n - 1:
        ys = self.dropout(ys)
      carries.append(carry)
      h = ys
    want_carry = self.return_carry if return_carry is None else return_carry
    return (carries, h) if want_carry else h


class LinenRNN(linen.Module):
  """`RNN` as a ``flax.linen`` module: ``variables = {"params": {"cell": cell_params}}``.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj, rnnjax.nnx
    >>> layer = rj.nnx.LinenRNN(rj.gru(4))
    >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    >>> variables["params"]["cell"].w_x.shape
    (3, 12)
    >>> layer.apply(variables, jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 1])).shape
    (2, 5, 4)

  Attributes:
    cell: the `rnnjax.Cell`.
    time_major: inputs and outputs are ``[T, B, ·]``.
    reverse: run each sequence backwards.
    keep_order: with ``reverse``, keep ``ys[t]`` aligned with ``xs[t]``.
    return_carry: return ``(carry, ys)``.
    unroll: `rnnjax.scan`'s unroll factor.
    backward: `rnnjax.scan`'s backward mode.
  """

  cell: Cell
  time_major: bool = False
  reverse: bool = False
  keep_order: bool = False
  return_carry: bool = False
  unroll: int = 1
  backward: str = "auto"

  @linen.compact
  def __call__(
    self,
    inputs: Array,
    *,
    initial_carry: Carry | None = None,
    seq_lengths: Array | None = None,
  ) -> Array | tuple[Carry, Array]:
    """Run the cell, as `RNN.__call__`; the params are made at ``init``
    from ``cell.init(key, inputs.shape[-1])``."""
    in_features = inputs.shape[-1]
    params = self.param("cell", lambda key: self.cell.init(key, in_features))
    carry, ys = _run(
      self.cell,
      params,
      inputs,
      initial_carry,
      seq_lengths,
      time_major=self.time_major,
      reverse=self.reverse,
      keep_order=self.keep_order,
      unroll=self.unroll,
      backward=self.backward,
    )
    return (carry, ys) if self.return_carry else ys
