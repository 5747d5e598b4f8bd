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

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import flax
import flax.errors
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


def _spatial(cell: Cell) -> tuple[int, ...]:
  """The spatial shape ``S`` of a cell over frames (`rnnjax.conv_lstm`), else ``()``."""
  return tuple(dict(cell.options).get("spatial_shape", ()))


def _is_lstm(cell: Cell) -> bool:
  return isinstance(cell.initial_carry(()), rj.LSTMCarry)


@dataclasses.dataclass(frozen=True)
class CellView:
  """``module.cell``: the `rnnjax.Cell` with the attributes flax code reads
  off ``nnx.RNN(...).cell``.

  Every other attribute is the rnnjax cell's (``module.cell.hidden_size``,
  ``module.cell.init``); ``module.cell.rnnjax_cell`` is the cell itself.

  Attributes:
    rnnjax_cell: the wrapped `rnnjax.Cell`.
    in_features: the inputs' feature size (channels ``C`` for spatial cells).
  """

  rnnjax_cell: Cell
  in_features: int

  @property
  def hidden_features(self) -> int:
    """H, as flax's cells name it."""
    return int(self.rnnjax_cell.hidden_size)

  @property
  def num_feature_axes(self) -> int:
    """1, or ``1 + len(S)`` for a cell over frames ``[*S, C]``."""
    return 1 + len(_spatial(self.rnnjax_cell))

  def initialize_carry(self, input_shape: Sequence[int], rngs: Any = None) -> Any:
    """The zero carry for inputs of ``input_shape = (*batch, *features)``, in
    flax's layout (``(c, h)`` for the LSTM), as flax's ``cell.initialize_carry``.

    Args:
      input_shape: one step's input shape, e.g. ``(B, I)``.
      rngs: unused (rnnjax's carries start at zeros); accepted for flax's signature.

    Returns:
      The carry, leaves ``[*batch, H]`` (``[*batch, *S, F]`` for spatial cells).
    """
    del rngs
    batch = tuple(input_shape)[: len(input_shape) - self.num_feature_axes]
    B = math.prod(batch)
    carry = self.rnnjax_cell.initial_carry((B,), jnp.float32)
    return _to_flax(self.rnnjax_cell, carry, batch)

  def __getattr__(self, name: str) -> Any:
    if name.startswith("__") or name == "rnnjax_cell":  # copy/pickle probe a bare instance
      raise AttributeError(name)
    return getattr(self.rnnjax_cell, name)


def _to_flax(cell: Cell, carry: Carry, batch: tuple[int, ...]) -> Any:
  """rnnjax's carry (leaves ``[B, X]``) in flax's layout: leaves ``[*batch, X]``
  (``[*batch, *S, X / prod(S)]`` over frames), ``(c, h)`` for an LSTM carry."""
  S = _spatial(cell)

  def shape(a: Array) -> Array:
    tail = (*S, a.shape[-1] // math.prod(S)) if S else a.shape[1:]
    return a.reshape(*batch, *tail)

  carry = jax.tree.map(shape, carry)
  if isinstance(carry, rj.LSTMCarry):
    return (carry.c, carry.h)
  return carry


def _from_flax(cell: Cell, carry: Any, batch: tuple[int, ...], dtype: Any, what: str) -> Carry:
  """A carry in flax's layout (or an ``rj.LSTMCarry``) as rnnjax's, leaves ``[B, X]``."""
  B = math.prod(batch)
  want = cell.initial_carry((B,), dtype)
  if isinstance(want, rj.LSTMCarry) and not isinstance(carry, rj.LSTMCarry):
    if not (isinstance(carry, (tuple, list)) and len(carry) == 2):
      raise ValueError(
        f"{what}: initial_carry for {cell!r} is flax's LSTM carry (c, h), a pair of arrays; "
        f"got {type(carry).__name__}"
      )
    carry = rj.LSTMCarry(h=carry[1], c=carry[0])
  got_leaves = jax.tree.leaves(carry)
  want_leaves, tree = jax.tree.flatten(want)
  if len(got_leaves) != len(want_leaves):
    raise ValueError(
      f"{what}: initial_carry has {len(got_leaves)} arrays but {cell!r}'s carry has "
      f"{len(want_leaves)}; build it with rnn.cell.initialize_carry(input_shape)"
    )
  out = []
  for got, w in zip(got_leaves, want_leaves, strict=True):
    got = jnp.asarray(got)
    if got.size != w.size or tuple(got.shape[: len(batch)]) != batch:
      raise ValueError(
        f"{what}: initial_carry leaf has shape {tuple(got.shape)}, but inputs with batch "
        f"shape {batch} need {batch} followed by {w.size // max(B, 1)} state features; "
        f"build it with rnn.cell.initialize_carry(input_shape)"
      )
    out.append(got.reshape(w.shape))
  return jax.tree.unflatten(tree, out)


def _run_flax(
  cell: Cell,
  params: Params,
  inputs: Array,
  initial_carry: Any,
  seq_lengths: Array | None,
  *,
  time_major: bool,
  reverse: bool,
  keep_order: bool,
  unroll: int = 1,
  backward: str = "auto",
  kernel: str = "auto",
  what: str = "rnnjax.nnx.RNN",
  regularise: Callable[[Cell, Params, Array], tuple[Cell, Params, Array]] | None = None,
) -> tuple[Any, Array]:
  """`_run` behind flax's boundary: inputs ``[*batch, T, *features]`` (``[T,
  *batch, *features]`` time-major; no batch axis at all is fine), integer
  inputs promoted with the params' dtype, carries in flax's layout. The
  batch axes are flattened into one for `rnnjax.scan` and restored after.
  ``regularise(cell, params, xs)`` may swap in a cell over augmented inputs."""
  x = inputs if hasattr(inputs, "dtype") else jnp.asarray(inputs)
  if not jnp.issubdtype(x.dtype, jnp.inexact):
    leaves = [leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    x = x.astype(jnp.result_type(x.dtype, *(leaves[:1] or [jnp.float32])))
  S = _spatial(cell)
  nf = 1 + len(S)
  if x.ndim < nf + 1:
    raise ValueError(
      f"{what}: inputs have shape {tuple(x.shape)}, rank {x.ndim}; {cell!r} needs at least "
      f"rank {nf + 1}: [T, {', '.join([*(str(v) for v in S), 'I'])}] and any leading batch axes "
      f"([*batch, T, ...], or [T, *batch, ...] with time_major=True)"
    )
  feat = x.shape[x.ndim - nf :]
  if time_major:
    T, batch = x.shape[0], tuple(x.shape[1 : x.ndim - nf])
  else:
    T, batch = x.shape[x.ndim - nf - 1], tuple(x.shape[: x.ndim - nf - 1])
  B = math.prod(batch)
  flat = math.prod(feat)
  x = x.reshape((T, B, flat) if time_major else (B, T, flat))
  lengths = None
  if seq_lengths is not None:
    lengths = jnp.asarray(seq_lengths)
    if tuple(lengths.shape) != batch:
      raise ValueError(
        f"{what}: seq_lengths has shape {tuple(lengths.shape)} but the inputs "
        f"{tuple(inputs.shape)} have batch shape {batch}; pass one length per sequence"
      )
    lengths = lengths.reshape(B)
  carry0 = None
  if initial_carry is not None:
    carry0 = _from_flax(cell, initial_carry, batch, x.dtype, what)
  run_cell, run_params = cell, params
  if regularise is not None:
    xs_tm = x if time_major else jnp.swapaxes(x, 0, 1)
    run_cell, run_params, xs_tm = regularise(cell, params, xs_tm)
    x = xs_tm if time_major else jnp.swapaxes(xs_tm, 0, 1)
  carry, ys = _run(
    run_cell,
    run_params,
    x,
    carry0,
    lengths,
    time_major=time_major,
    reverse=reverse,
    keep_order=keep_order,
    unroll=unroll,
    backward=backward,
    kernel=kernel,
  )
  out = (*S, ys.shape[-1] // math.prod(S)) if S else (ys.shape[-1],)
  ys = ys.reshape((T, *batch, *out) if time_major else (*batch, T, *out))
  return _to_flax(cell, carry, batch), ys


Streams = str | Sequence[str] | None
"""``broadcast_rngs``: the rng stream names whose masks are shared by every step."""

STREAMS = ("dropout", "recurrent_dropout", "zoneout")


def _unflatten(cell: Cell, s: Array, like: Carry) -> Carry:
  """The inverse of rnnjax's one carry flattener, each leaf in ``like``'s dtype (the
  masks may promote ``s``)."""
  parts = rj.jacobian.unflatten_state(cell, s, like)
  return jax.tree.map(lambda p, leaf: p.astype(leaf.dtype), parts, like)


class MaskedParams(NamedTuple):
  """The params of a cell run with dropout masks: the cell's own, unchanged."""

  cell: Any


@functools.lru_cache(maxsize=64)
def _masked_cell(cell: Cell, zoneout: bool, recurrent_dropout: bool, output_size: int) -> Cell:
  """``cell`` over inputs ``[x ; m_zoneout ; m_dropout]``: keep-masks ``m`` over the
  flattened state (S = ``cell.state_size`` units each)::

    s̃_t = step(s_{t-1}, x_t)
    s_t = m_z ⊙ s_{t-1} + (1 − m_z) ⊙ s̃_t      (zoneout, rnnjax.zoneout's rule)
    y_t = output(s_t)  (the step's own y without zoneout)
    s_t ← m_d ⊙ s_t                             (recurrent dropout on the carry)

  The params are the cell's own in a `MaskedParams`; one cell per flag pair, so
  jit caches hold."""
  S = cell.state_size
  extra = S * (int(zoneout) + int(recurrent_dropout))

  def init(key: Array, input_size: int) -> MaskedParams:
    return MaskedParams(cell.init(key, input_size - extra))

  def step(params: MaskedParams, carry: Carry, xm: Array) -> tuple[Carry, Array]:
    x, rest = xm[..., :-extra], xm[..., -extra:]
    new, y = cell.step(params.cell, carry, x)
    s = rj.jacobian.flatten_state(cell, new)
    if zoneout:
      m, rest = rest[..., :S], rest[..., S:]
      s = m * rj.jacobian.flatten_state(cell, carry) + (1.0 - m) * s
      y = cell.output(_unflatten(cell, s, new))
    if recurrent_dropout:
      s = rest * s
    return _unflatten(cell, s, new), y

  return rj.custom_cell(
    init, step, cell.initial_carry, name=f"regularised_{cell.name}", output_size=output_size
  )


def _streams(broadcast_rngs: Any, what: str) -> tuple[str, ...]:
  if broadcast_rngs is None:
    return ()
  if isinstance(broadcast_rngs, str):
    return (broadcast_rngs,)
  if isinstance(broadcast_rngs, Sequence) and all(isinstance(n, str) for n in broadcast_rngs):
    return tuple(broadcast_rngs)
  raise TypeError(
    f"{what}: broadcast_rngs must be None, a stream name or a sequence of names (of "
    f"{STREAMS}), got {broadcast_rngs!r}"
  )


def _draw(rngs: Any, stream: str, what: str) -> Array:
  """A fresh key from ``rngs`` (an ``nnx.Rngs``, an ``nnx.RngStream`` or a key)."""
  if isinstance(rngs, jax.Array):
    return jax.random.fold_in(rngs, STREAMS.index(stream) if stream in STREAMS else 99)
  try:
    if isinstance(rngs, nnx.Rngs):
      return getattr(rngs, stream)()
    return rngs()
  except flax.errors.TraceContextError as e:
    raise ValueError(
      f"{what}: drawing the {stream!r} mask would advance an nnx.Rngs made outside this "
      f"jax transform, which flax forbids; pass rngs=nnx.Rngs(key) (or a key) to the call, "
      f"use flax's nnx.jit/nnx.grad, or call .eval() to run without dropout"
    ) from e


class RNN(nnx.Module):
  """An rnnjax cell run over a sequence, as ``flax.nnx.RNN`` runs a flax cell.

  Each call is `rnnjax.scan` of ``cell`` with this module's params, so the
  values and gradients are those of the functional API (the tests hold them
  equal), and flax's conventions map onto it:

  * inputs ``[*batch, T, I]`` (any number of batch axes, none included;
    ``[T, *batch, I]`` with ``time_major``); frames ``[*batch, T, *S, C]``
    for `rnnjax.conv_lstm`; integer inputs are promoted with the params'
    dtype, as flax's cells do;
  * ``seq_lengths``: `rnnjax.scan`'s ``lengths``: the carry after each
    sequence's last valid step; padded outputs are zeros (flax returns what
    its cell computed on the padding);
  * ``reverse``: each sequence runs backwards inside its length;
  * ``keep_order``: False (default) returns a reversed run's outputs in
    processing order, as flax does; True aligns ``ys[t]`` with ``xs[t]``;
  * carries in flax's layout: the LSTM's ``(c, h)`` (an ``rj.LSTMCarry``
    passed in is read by name), leaves ``[*batch, H]``; default zeros;
  * dropout drawn from ``rngs`` streams, with ``broadcast_rngs`` as in flax:
    a stream named there draws one mask per call shared by every step
    (locked, variational dropout), any other a fresh mask per step.
    ``dropout_rate`` drops input features (stream ``"dropout"``),
    ``recurrent_dropout_rate`` drops state units of the carry passed to the
    next step (``"recurrent_dropout"``), ``zoneout_rate`` keeps state units
    at their previous value (``"zoneout"``, `rnnjax.zoneout`'s rule; at
    evaluation the expectation). ``.eval()`` / ``deterministic=True`` turn
    them off.

  Attributes:
    cell: a `CellView`: the `rnnjax.Cell` with flax's ``in_features``,
      ``hidden_features``, ``num_feature_axes`` and
      ``initialize_carry(input_shape, rngs)``.
    in_features: I (channels ``C`` for spatial cells).
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
    >>> (c, h), ys = rnn(jnp.ones((2, 5, 3)), return_carry=True)   # flax's (c, h)
    >>> h.shape, rnn.params.w_x.shape, rnn.cell.hidden_features
    ((2, 4), (3, 16), 4)
    >>> rnn(jnp.ones((5, 3), jnp.int32)).shape   # no batch axis, integer inputs
    (5, 4)
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
    dropout_rate: float = 0.0,
    recurrent_dropout_rate: float = 0.0,
    zoneout_rate: float = 0.0,
    broadcast_rngs: Streams = None,
    deterministic: bool = False,
  ):
    """Wrap ``cell`` with fresh params (from ``rngs``) or given ``params``.

    Args:
      cell: any `rnnjax.Cell`: built-in (``rj.lstm(H)``) or
        ``rj.custom_cell(...)``.
      in_features: I, the inputs' feature size (the channels ``C`` of
        frames ``[*S, C]`` for `rnnjax.conv_lstm`).
      rngs: draws the params, ``cell.init(rngs.params(), I)``, and (kept by
        the module) the dropout masks.
      params: the cell's params instead (e.g. from `rnnjax.interop`).
      time_major: inputs and outputs are ``[T, *batch, ·]``.
      reverse: run each sequence backwards (inside its length).
      keep_order: with ``reverse``, return ``ys[t]`` aligned with
        ``xs[t]`` instead of in processing order.
      return_carry: return ``(carry, ys)`` instead of ``ys``.
      unroll: `rnnjax.scan`'s ``lax.scan`` unroll factor.
      backward: `rnnjax.scan`'s backward mode (``"auto"``, ``"bptt"``,
        ``"autodiff"``, ``"checkpoint"``).
      kernel: `rnnjax.scan`'s time-loop kernel (``"auto"``, ``"xla"``,
        ``"pallas"``).
      dropout_rate: dropout on the input features, in ``[0, 1)``.
      recurrent_dropout_rate: dropout on the state each step hands on.
      zoneout_rate: the probability that a state unit keeps its value.
      broadcast_rngs: stream names (of ``"dropout"``,
        ``"recurrent_dropout"``, ``"zoneout"``) whose mask is shared by every
        step, as flax's ``broadcast_rngs``; None: a mask per step.
      deterministic: no dropout (``.eval()`` sets it, ``.train()`` clears it).

    Raises:
      TypeError: ``cell`` is not a `rnnjax.Cell`, or ``broadcast_rngs`` is
        not names.
      ValueError: neither or both of ``rngs`` and ``params`` are given, a
        rate lies outside ``[0, 1)`` or needs ``rngs`` that are missing,
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
    rates = {
      "dropout_rate": dropout_rate,
      "recurrent_dropout_rate": recurrent_dropout_rate,
      "zoneout_rate": zoneout_rate,
    }
    for name, rate in rates.items():
      if not 0.0 <= rate < 1.0:
        raise ValueError(f"{what}: {name} must lie in [0, 1), got {rate!r}")
    flat_in = in_features * math.prod(_spatial(cell))
    if params is None:
      assert rngs is not None
      params = cell.init(rngs.params(), flat_in)
    self.out_features = _output_size(cell, params, flat_in, what)
    self.cell = CellView(cell, in_features)
    self.in_features = in_features
    self.params = nnx.data(jax.tree.map(nnx.Param, params))
    self.time_major = time_major
    self.reverse = reverse
    self.keep_order = keep_order
    self.return_carry = return_carry
    self.unroll = unroll
    self.backward = backward
    self.kernel = kernel
    self.dropout_rate = dropout_rate
    self.recurrent_dropout_rate = recurrent_dropout_rate
    self.zoneout_rate = zoneout_rate
    self.broadcast_rngs = _streams(broadcast_rngs, what)
    self.deterministic = deterministic
    self.rngs = rngs if any(rates.values()) else None

  def to_layer(self) -> tuple[Cell, Params]:
    """``(cell, params)`` with the params as arrays: a layer of the
    functional API (`rnnjax.scan`, `rnnjax.stacked`, `rnnjax.interop.to_torch`)."""
    params = jax.tree.map(lambda v: v.get_value(), self.params, is_leaf=_is_variable)
    return self.cell.rnnjax_cell, params

  def _regulariser(
    self, rngs: Any, deterministic: bool
  ) -> Callable[[Cell, Params, Array], tuple[Cell, Params, Array]] | None:
    """The dropout of this call as ``(cell, xs [T, B, F]) -> (cell', xs')``, or None."""
    drop, rec, zone = self.dropout_rate, self.recurrent_dropout_rate, self.zoneout_rate
    if not (drop or rec or zone) or (deterministic and not zone):
      return None
    what = "rnnjax.nnx.RNN"
    source = self.rngs if rngs is None else rngs
    if source is None and not deterministic:
      raise ValueError(
        f"{what}: dropout needs rngs: build the module with rngs=nnx.Rngs(...) or pass "
        f"rngs= to the call (or call .eval())"
      )

    def mask(stream: str, rate: float, keep: bool, shape: tuple[int, ...], dtype: Any) -> Array:
      """Bernoulli masks [T, B, F] (one shared [1, B, F] for a broadcast stream);
      ``keep``: 1 with probability ``rate`` (zoneout), else inverted dropout."""
      T, B, F = shape
      key = _draw(source, stream, what)
      m_shape = (1, B, F) if stream in self.broadcast_rngs else (T, B, F)
      if keep:
        m = jax.random.bernoulli(key, rate, m_shape).astype(dtype)
      else:
        m = jax.random.bernoulli(key, 1.0 - rate, m_shape).astype(dtype) / (1.0 - rate)
      return jnp.broadcast_to(m, shape)

    def regularise(cell: Cell, params: Params, xs: Array) -> tuple[Cell, Params, Array]:
      T, B, _ = xs.shape
      S = cell.state_size
      if drop and not deterministic:
        xs = xs * mask("dropout", drop, False, xs.shape, xs.dtype)
      extra = []
      if zone:
        if deterministic:
          extra.append(jnp.full((T, B, S), zone, xs.dtype))
        else:
          extra.append(mask("zoneout", zone, True, (T, B, S), xs.dtype))
      use_rec = bool(rec) and not deterministic
      if use_rec:
        extra.append(mask("recurrent_dropout", rec, False, (T, B, S), xs.dtype))
      if not extra:
        return cell, params, xs
      masked = _masked_cell(cell, bool(zone), use_rec, self.out_features)
      return masked, MaskedParams(params), jnp.concatenate([xs, *extra], axis=-1)

    return regularise

  def __call__(
    self,
    inputs: Array,
    *,
    initial_carry: Any = None,
    seq_lengths: Array | None = None,
    return_carry: bool | None = None,
    time_major: bool | None = None,
    reverse: bool | None = None,
    keep_order: bool | None = None,
    rngs: Any = None,
    deterministic: bool | None = None,
  ) -> Any:
    """Run the cell over ``inputs``.

    Args:
      inputs: ``[*batch, T, I]`` (``[T, *batch, I]`` with ``time_major``);
        ``[*batch, T, *S, C]`` frames for spatial cells; integers are
        promoted with the params' dtype.
      initial_carry: the carry in flax's layout (``(c, h)`` for the LSTM, or
        an ``rj.LSTMCarry``), leaves ``[*batch, ·]``; default zeros.
      seq_lengths: optional ints of the batch shape, in ``[0, T]`` (`rnnjax.scan`'s
        rule: out of range they raise eagerly and are clipped under ``jit``).
      return_carry: overrides the module's flag for this call; so do
        ``time_major``, ``reverse``, ``keep_order`` and ``deterministic``.
      time_major: see ``return_carry``.
      reverse: see ``return_carry``.
      keep_order: see ``return_carry``.
      rngs: draws this call's dropout masks instead of the module's rngs
        (an ``nnx.Rngs``, an ``nnx.RngStream`` or a key), e.g. inside a plain
        jax transform that closes over the module.
      deterministic: see ``return_carry``.

    Returns:
      ``ys: [*batch, T, O]`` (``[T, *batch, O]`` with ``time_major``), zero at
      padded steps, or ``(carry, ys)`` with ``return_carry``, the carry after
      each sequence's last valid step in flax's layout.

    Raises:
      TypeError, ValueError: from `rnnjax.scan` or the layout checks, naming
        the argument, its shape and the fix.
    """
    det = self.deterministic if deterministic is None else deterministic
    cell, params = self.to_layer()
    carry, ys = _run_flax(
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
      regularise=self._regulariser(rngs, bool(det)),
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

    Raises:
      TypeError: a direction is an `rnnjax.Cell` instead of a module.
    """
    for name, rnn in (("forward_rnn", forward_rnn), ("backward_rnn", backward_rnn)):
      if isinstance(rnn, Cell):
        raise TypeError(
          f"rnnjax.nnx.Bidirectional: {name} is the cell {rnn!r}, but it takes two RNN "
          f"modules, as flax's nnx.Bidirectional does; wrap each cell: "
          f"Bidirectional(rnnjax.nnx.RNN(cell_f, I, rngs=rngs), "
          f"rnnjax.nnx.RNN(cell_b, I, rngs=rngs))"
        )
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
      rngs: passed to both directions (their dropout masks).
      time_major: overrides the module's flag for this call.

    Returns:
      ``ys = merge_fn(ys_fwd, ys_bwd)``, or ``((carry_fwd, carry_bwd), ys)``.
    """
    del reverse, keep_order
    tm = self.time_major if time_major is None else time_major
    c0f, c0b = (None, None) if initial_carry is None else initial_carry
    carry_f, ys_f = self.forward_rnn(
      inputs,
      initial_carry=c0f,
      seq_lengths=seq_lengths,
      return_carry=True,
      time_major=tm,
      reverse=False,
      rngs=rngs,
    )
    carry_b, ys_b = self.backward_rnn(
      inputs,
      initial_carry=c0b,
      seq_lengths=seq_lengths,
      return_carry=True,
      time_major=tm,
      reverse=True,
      keep_order=True,
      rngs=rngs,
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
  residual=..., time_major=False)``. Dropout (`rnnjax.dropout`, masks from
  the ``"dropout"`` stream of ``rngs`` or of the call's ``rngs=``) follows every
  layer but the last: active by default, off after ``model.eval()``.

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
    self.dropout_rate = dropout_rate
    self.deterministic = False
    self.rngs = rngs if dropout_rate else None
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
    rngs: Any = None,
    deterministic: bool | None = None,
  ) -> Array | tuple[list[Carry], Array]:
    """Run every layer.

    Args:
      inputs: ``[B, T, I]`` (``[T, B, I]`` with ``time_major``).
      initial_carry: optional list of carries, one per layer (a pair for a
        bidirectional layer).
      seq_lengths: optional ``[B]`` valid lengths, used by every layer.
      return_carry: overrides the module's flag for this call.
      time_major: overrides the module's flag for this call.
      rngs: draws this call's dropout masks (an ``nnx.Rngs``, an
        ``nnx.RngStream`` or a key) instead of the module's, e.g. inside a
        plain jax transform that closes over the module; passed to the layers.
      deterministic: no dropout for this call (default: the module's flag,
        set by ``.eval()``).

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
    det = self.deterministic if deterministic is None else deterministic
    source = self.rngs if rngs is None else rngs
    carries, h = [], inputs
    for l, layer in enumerate(self.layers):
      c0 = None if initial_carry is None else initial_carry[l]
      keyed = isinstance(source, jax.Array)  # a key: one independent key per use
      carry, ys = layer(
        h,
        initial_carry=c0,
        seq_lengths=seq_lengths,
        return_carry=True,
        time_major=tm,
        rngs=jax.random.fold_in(rngs, l) if isinstance(rngs, jax.Array) else rngs,
      )
      if self.residual and l > 0:
        ys = ys + h
      if self.dropout_rate and not det and l < n - 1:
        if source is None:
          raise ValueError(
            "rnnjax.nnx.Stacked: dropout needs rngs: pass rngs= to the call (or call .eval())"
          )
        src: Any = jax.random.fold_in(cast(Array, source), 1000 + l) if keyed else source
        ys = rj.dropout(_draw(src, "dropout", "rnnjax.nnx.Stacked"), ys, self.dropout_rate)
      carries.append(carry)
      h = ys
    want_carry = self.return_carry if return_carry is None else return_carry
    return (carries, h) if want_carry else h


class LinenRNN(linen.Module):
  """`RNN` as a ``flax.linen`` module: ``variables = {"params": {"cell": cell_params}}``.

  The call takes linen ``nn.RNN``'s arguments, so ``flax.linen.Bidirectional``
  drives it, and flax's layouts (inputs ``[*batch, T, I]``, the LSTM carry
  ``(c, h)``, integer inputs promoted).

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj, rnnjax.nnx
    >>> layer = rj.nnx.LinenRNN(rj.gru(4))
    >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    >>> variables["params"]["cell"].w_x.shape
    (3, 12)
    >>> layer.apply(variables, jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 1])).shape
    (2, 5, 4)
    >>> import flax.linen as nn
    >>> bi = nn.Bidirectional(rj.nnx.LinenRNN(rj.gru(4)), rj.nnx.LinenRNN(rj.gru(4)))
    >>> bi.init_with_output(jax.random.key(0), jnp.ones((2, 5, 3)))[0].shape
    (2, 5, 8)

  Attributes:
    cell: the `rnnjax.Cell`.
    time_major: inputs and outputs are ``[T, *batch, ·]``.
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
    initial_carry: Any = None,
    init_key: Array | None = None,
    seq_lengths: Array | None = None,
    return_carry: bool | None = None,
    time_major: bool | None = None,
    reverse: bool | None = None,
    keep_order: bool | None = None,
  ) -> Any:
    """Run the cell, as `RNN.__call__`, with linen ``nn.RNN``'s arguments.

    The params are made at ``init`` from ``cell.init(key, I)``.

    Args:
      inputs: ``[*batch, T, I]`` (``[T, *batch, I]`` time-major).
      initial_carry: flax's layout (``(c, h)`` for the LSTM); default zeros.
      init_key: unused: rnnjax's initial carry is zeros (linen draws the
        carry's init with it); accepted so ``nn.Bidirectional`` runs.
      seq_lengths: optional ints of the batch shape.
      return_carry: overrides the attribute for this call; so do
        ``time_major``, ``reverse`` and ``keep_order``.
      time_major: see ``return_carry``.
      reverse: see ``return_carry``.
      keep_order: see ``return_carry``.

    Returns:
      ``ys``, or ``(carry, ys)`` with ``return_carry``.
    """
    del init_key
    S = _spatial(self.cell)
    x = jnp.asarray(inputs)
    nf = 1 + len(S)
    flat_in = math.prod(x.shape[x.ndim - nf :]) if x.ndim >= nf else 0
    params = self.param("cell", lambda key: self.cell.init(key, flat_in))
    carry, ys = _run_flax(
      self.cell,
      params,
      x,
      initial_carry,
      seq_lengths,
      time_major=self.time_major if time_major is None else time_major,
      reverse=self.reverse if reverse is None else reverse,
      keep_order=self.keep_order if keep_order is None else keep_order,
      unroll=self.unroll,
      backward=self.backward,
      what="rnnjax.nnx.LinenRNN",
    )
    want = self.return_carry if return_carry is None else return_carry
    return (carry, ys) if want else ys
