"""Composition as plain functions: deep (stacked) and bidirectional RNNs,
embeddings and dropout.

A *layer* is a ``(cell, params)`` pair; a bidirectional layer is a pair of
layers ``((cell_fwd, params_fwd), (cell_bwd, params_bwd))``. `stacked` runs a
list of either kind:

    h^{(0)} = xs
    h^{(l)} = RNN_l(h^{(l-1)})  [+ h^{(l-1)} if residual]  [dropout between layers]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeGuard, cast

import jax
import jax.numpy as jnp

from rnnjax._src import arguments
from rnnjax._src.cells.base import Cell
from rnnjax._src.scan import scan
from rnnjax._src.typing import Array, Carry, Params

MERGES = ("concat", "sum")

Layer = tuple[Cell, Params]
"""A layer: a cell and its params."""

BidirectionalLayer = tuple[Layer, Layer]
"""A bidirectional layer: the forward and the backward ``(cell, params)``."""


def bidirectional(
  fwd: Layer,
  bwd: Layer,
  xs: Array,
  carries: tuple[Carry, Carry] | None = None,
  *,
  lengths: Array | None = None,
  merge: str = "concat",
  time_major: bool = True,
  **scan_kw: Any,
) -> tuple[tuple[Carry, Carry], Array]:
  """A bidirectional layer over a (padded) batch.

  Args:
    fwd: ``(cell, params)`` of the forward direction.
    bwd: ``(cell, params)`` of the backward direction.
    xs: ``[T, B, I]`` (or ``[B, T, I]`` with ``time_major=False``).
    carries: optional ``(carry_fwd, carry_bwd)``.
    lengths: ``[B]``; the backward direction starts at each sequence's last
      valid step, so padding never leaks into it. `rnnjax.scan`'s rule: out
      of ``[0, T]`` they raise when concrete and are clipped under ``jit``,
      the same in both directions.
    merge: ``"concat"`` (``[..., 2H]``) or ``"sum"`` (``[..., H]``).
    time_major: ``xs`` and ``ys`` are ``[T, B, ·]`` (default) or ``[B, T, ·]``.
    **scan_kw: passed to both scans (`rnnjax.scan`: ``unroll``, ``backward``
      mode, ``resets``, ...). The same ``resets: [T, B]`` serve both
      directions: the backward one runs each episode from its last step to
      its first, and its returned carry is the first episode's.

  Returns:
    ``((carry_fwd, carry_bwd), ys)`` with ``ys: [T, B, 2H]`` (concat) or
    ``[T, B, H]`` (sum).

  Raises:
    ValueError: ``merge`` is unknown, or ``"sum"`` meets unequal hidden sizes.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> kf, kb = jax.random.split(jax.random.key(0))
    >>> fwd = (rj.gru(4), rj.gru(4).init(kf, 3))
    >>> bwd = (rj.gru(4), rj.gru(4).init(kb, 3))
    >>> (cf, cb), ys = rj.bidirectional(fwd, bwd, jnp.ones((5, 2, 3)), lengths=jnp.array([5, 3]))
    >>> ys.shape, cf.shape, cb.shape
    ((5, 2, 8), (2, 4), (2, 4))
  """
  if merge not in MERGES:
    raise ValueError(f"rnnjax.bidirectional: unknown merge {merge!r}; expected one of {MERGES}")
  (cf, pf), (cb, pb) = fwd, bwd
  if merge == "sum" and cf.hidden_size != cb.hidden_size:
    raise ValueError(
      f"rnnjax.bidirectional: merge='sum' needs equal hidden sizes, got "
      f"{cf.hidden_size} and {cb.hidden_size}; use merge='concat'"
    )
  c0f, c0b = (None, None) if carries is None else carries
  carry_f, ys_f = scan(cf, pf, xs, c0f, lengths=lengths, time_major=time_major, **scan_kw)
  carry_b, ys_b = scan(
    cb, pb, xs, c0b, lengths=lengths, reverse=True, time_major=time_major, **scan_kw
  )
  ys = jnp.concatenate([ys_f, ys_b], axis=-1) if merge == "concat" else ys_f + ys_b
  return (carry_f, carry_b), ys


def dropout(key: Array, x: Array, rate: float) -> Array:
  """Inverted dropout: zero each entry with probability ``rate``, scale the rest.

  Args:
    key: PRNG key.
    x: any array.
    rate: drop probability in ``[0, 1)``; 0 returns ``x`` unchanged.

  Returns:
    ``x * mask / (1 - rate)`` with ``mask ~ Bernoulli(1 - rate)``, so the
    expectation is ``x``.

  Raises:
    ValueError: ``rate`` lies outside ``[0, 1)``.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate must lie in [0, 1), got {rate}")
  if rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def _is_bidirectional(layer: Any) -> TypeGuard[BidirectionalLayer]:
  return (
    isinstance(layer, (tuple, list))
    and len(layer) == 2
    and isinstance(layer[0], (tuple, list))
    and isinstance(layer[0][0], Cell)
  )


def stacked(
  layers: Sequence[Layer | BidirectionalLayer],
  xs: Array,
  carries: Sequence[Carry] | None = None,
  *,
  lengths: Array | None = None,
  residual: bool = False,
  dropout_rate: float = 0.0,
  key: Array | None = None,
  merge: str = "concat",
  time_major: bool = True,
  **scan_kw: Any,
) -> tuple[list[Carry], Array]:
  """A deep RNN: each layer's outputs are the next layer's inputs.

  Args:
    layers: a list of ``(cell, params)`` or bidirectional
      ``((cell_f, params_f), (cell_b, params_b))`` pairs.
    xs: ``[T, B, I]`` (or ``[B, T, I]`` with ``time_major=False``).
    carries: optional list of initial carries, one per layer.
    lengths: ``[B]`` valid lengths, used by every layer (`rnnjax.scan`'s
      rule: padding masked, traced lengths clipped to ``[0, T]``).
    residual: add each layer's input to its output where the sizes agree
      (from the second layer on); a mismatch is an error.
    dropout_rate: dropout on the outputs of every layer but the last
      (needs ``key``; pass 0 for evaluation); in ``[0, 1)``, checked even
      for a single layer, which it leaves unchanged.
    key: PRNG key for dropout.
    merge: how bidirectional layers merge their directions.
    time_major: ``xs`` and ``ys`` are ``[T, B, ·]`` (default) or ``[B, T, ·]``.
    **scan_kw: passed to every layer's scans (`rnnjax.scan`), e.g. episode
      ``resets: [T, B]``, which every layer and both directions of a
      bidirectional layer see (see `bidirectional`).

  Returns:
    ``(carries, ys)``: the list of final carries (a ``(carry_fwd, carry_bwd)``
    pair for a bidirectional layer) and the last layer's outputs
    ``ys: [T, B, H_last]`` (``2H_last`` for a concatenated bidirectional
    last layer).

  Raises:
    ValueError: ``layers`` is empty, ``carries`` has the wrong length,
      ``dropout_rate`` lies outside ``[0, 1)``, dropout lacks a ``key``, or a
      residual connection meets unequal shapes.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> layers = rj.init_stacked(jax.random.key(0), [rj.lstm(4), rj.lstm(4)], 3)
    >>> carries, ys = rj.stacked(layers, jnp.ones((6, 2, 3)), residual=True)
    >>> ys.shape, len(carries), carries[1].h.shape
    ((6, 2, 4), 2, (2, 4))
  """
  if not layers:
    raise ValueError("rnnjax.stacked: layers is empty; pass a list of (cell, params)")
  arguments.unit_interval("dropout_rate", dropout_rate, "rnnjax.stacked")
  if dropout_rate and key is None:
    raise ValueError(
      "rnnjax.stacked: dropout_rate > 0 needs key=...; pass dropout_rate=0.0 for evaluation"
    )
  if carries is not None and len(carries) != len(layers):
    raise ValueError(f"rnnjax.stacked: got {len(carries)} carries for {len(layers)} layers")
  keys = jax.random.split(key, len(layers)) if dropout_rate and key is not None else None
  finals, h = [], xs
  for l, layer in enumerate(layers):
    c0 = None if carries is None else carries[l]
    if _is_bidirectional(layer):
      carry, ys = bidirectional(
        layer[0], layer[1], h, c0, lengths=lengths, merge=merge, time_major=time_major, **scan_kw
      )
    else:
      cell, params = cast(Layer, layer)
      carry, ys = scan(cell, params, h, c0, lengths=lengths, time_major=time_major, **scan_kw)
    if residual and l > 0:
      if ys.shape != h.shape:
        raise ValueError(
          f"rnnjax.stacked: residual connection at layer {l} needs equal "
          f"input and output shapes, got {h.shape} -> {ys.shape}"
        )
      ys = ys + h
    if keys is not None and l < len(layers) - 1:
      ys = dropout(keys[l], ys, dropout_rate)
    finals.append(carry)
    h = ys
  return finals, h


def stacked_step(
  layers: Sequence[Layer], carries: Sequence[Carry], x: Array
) -> tuple[list[Carry], Array]:
  """One step of a deep (unidirectional) RNN: each layer's output feeds the next.

  The step-by-step twin of `stacked`, for generation and for reading every
  layer's state as text streams in:

      carry^{(l)}, y^{(l)} = cell_l.step(params_l, carry^{(l)}, y^{(l-1)}),  y^{(0)} = x

  Args:
    layers: ``(cell, params)`` pairs.
    carries: one carry per layer.
    x: the input ``[..., I]`` of this step.

  Returns:
    ``(carries, y)``: every layer's new carry and the last layer's output
    ``[..., H]``.

  Raises:
    ValueError: ``carries`` and ``layers`` differ in length.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> layers = rj.init_stacked(jax.random.key(0), [rj.gru(4), rj.lstm(5)], 3)
    >>> carries = [cell.initial_carry((2,)) for cell, _ in layers]
    >>> carries, y = rj.stacked_step(layers, carries, jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
  """
  if len(carries) != len(layers):
    raise ValueError(
      f"rnnjax.stacked_step: got {len(carries)} carries for {len(layers)} "
      f"layers; pass [cell.initial_carry(batch_shape) for cell, _ in layers]"
    )
  new = []
  for (cell, params), carry in zip(layers, carries, strict=True):
    carry, x = cell.step(params, carry, x)
    new.append(carry)
  return new, x


def init_stacked(
  key: Array,
  cells: Sequence[Cell],
  input_size: int,
  bidirectional: bool = False,
  merge: str = "concat",
) -> list[Any]:
  """Layers for `stacked`: params for each cell, input sizes chained.

  With ``bidirectional=True`` each cell becomes a forward/backward pair
  (two independent param sets) and the next layer's input is ``2H``
  (``merge="concat"``) or ``H`` (``"sum"``).

  Args:
    key: PRNG key.
    cells: one cell per layer.
    input_size: I of the first layer.
    bidirectional: make every layer bidirectional.
    merge: how the next layer sees a bidirectional layer's outputs.

  Returns:
    A list of ``(cell, params)`` (or pairs of them) for `stacked`.

  Examples:
    >>> import jax, rnnjax as rj
    >>> layers = rj.init_stacked(jax.random.key(0), [rj.gru(4), rj.gru(6)], 3, True)
    >>> [params.w_x.shape for (_, params), _ in layers]    # inputs 3, then 2·4
    [(3, 12), (8, 18)]
  """
  layers: list[Layer | BidirectionalLayer] = []
  size = input_size
  for cell, k in zip(cells, jax.random.split(key, len(cells)), strict=True):
    if bidirectional:
      kf, kb = jax.random.split(k)
      layers.append(((cell, cell.init(kf, size)), (cell, cell.init(kb, size))))
      size = cell.hidden_size * (2 if merge == "concat" else 1)
    else:
      layers.append((cell, cell.init(k, size)))
      size = cell.hidden_size
  return layers


# ---------------------------------------------------------------- embeddings


class EmbeddingParams(NamedTuple):
  """The params of an `Embedding`.

  Attributes:
    table: ``[V, E]``, one row per token.
  """

  table: Array  # [V, E]


class Embedding(NamedTuple):
  """An embedding layer as pure functions (see `embedding`).

  Attributes:
    vocab_size: V.
    features: E, the size of each vector.
    init: ``init(key) -> EmbeddingParams``.
    apply: ``apply(params, ids [...]) -> vectors [..., E]``.
  """

  vocab_size: int
  features: int
  init: Callable[[Array], EmbeddingParams]
  apply: Callable[[EmbeddingParams, Array], Array]


def embedding(
  vocab_size: int, features: int, *, scale: float = 1.0, param_dtype: Any = jnp.float32
) -> Embedding:
  """A lookup table ``E: [V, E]``; ``apply(params, ids) = E[ids]``.

  The lecture's embedding layer: one-hot ``x`` times ``E`` is a row lookup,
  and its gradient is a scatter-add of the output gradients into the rows
  that were used. Rows are initialised ``N(0, scale²)``.

  Args:
    vocab_size: V.
    features: E.
    scale: the standard deviation of the initial rows.
    param_dtype: storage dtype of the table.

  Returns:
    An `Embedding`; its ``apply`` raises a TypeError for non-integer ids and a
    ValueError for ids outside ``[0, V)`` (checked when their values are known
    at trace time).

  Raises:
    ValueError: ``vocab_size`` or ``features`` is not a positive int.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> emb = rj.embedding(10, 4)
    >>> emb.apply(emb.init(jax.random.key(0)), jnp.zeros((5, 2), jnp.int32)).shape
    (5, 2, 4)
  """
  arguments.positive_int("vocab_size", vocab_size, "rnnjax.embedding")
  arguments.positive_int("features", features, "rnnjax.embedding")

  def init(key: Array) -> EmbeddingParams:
    return EmbeddingParams(scale * jax.random.normal(key, (vocab_size, features), param_dtype))

  def apply(params: EmbeddingParams, ids: Array) -> Array:
    ids = jnp.asarray(ids) if not hasattr(ids, "dtype") else ids
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise TypeError(
        f"rnnjax.embedding: ids must be integers, got dtype {ids.dtype} "
        f"(shape {tuple(ids.shape)}); use ids.astype(jnp.int32)"
      )
    values = arguments.concrete(ids)
    if values is not None and values.size:
      lo, hi = int(values.min()), int(values.max())
      if lo < 0 or hi >= vocab_size:
        raise ValueError(
          f"rnnjax.embedding: ids must lie in [0, V={vocab_size}), got min {lo} and max {hi}"
        )
    return jnp.take(params.table, ids, axis=0)

  return Embedding(vocab_size, features, init, apply)
