"""Composition as plain functions: deep (stacked) and bidirectional RNNs,
embeddings and dropout.

A *layer* is a ``(cell, params)`` pair; a bidirectional layer is a pair of
layers ``((cell_fwd, params_fwd), (cell_bwd, params_bwd))``. `stacked` runs a
list of either kind::

    h^{(0)} = xs
    h^{(l)} = RNN_l(h^{(l-1)})  [+ h^{(l-1)} if residual]  [dropout between layers]
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from rnnjax.cells import base
from rnnjax.scan import scan

Array = Any
MERGES = ("concat", "sum")


def bidirectional(fwd, bwd, xs, carries=None, *, lengths=None,
                  merge: str = "concat", time_major: bool = True, **scan_kw):
  """A bidirectional layer over a (padded) batch.

  Args:
    fwd, bwd: ``(cell, params)`` for the forward and the backward direction.
    xs: ``[T, B, I]`` (or ``[B, T, I]`` with ``time_major=False``).
    carries: optional ``(carry_fwd, carry_bwd)``.
    lengths: ``[B]``; the backward direction starts at each sequence's last
      valid step, so padding never leaks into it.
    merge: ``"concat"`` (``[..., 2H]``) or ``"sum"`` (``[..., H]``).
    **scan_kw: passed to `rnnjax.scan` (``unroll``, ``backward`` mode, ...).

  Returns:
    ``((carry_fwd, carry_bwd), ys)``.
  """
  if merge not in MERGES:
    raise ValueError(f"rnnjax.bidirectional: unknown merge {merge!r}; expected one of {MERGES}")
  (cf, pf), (cb, pb) = fwd, bwd
  if merge == "sum" and cf.hidden_size != cb.hidden_size:
    raise ValueError(f"rnnjax.bidirectional: merge='sum' needs equal hidden sizes, got "
                     f"{cf.hidden_size} and {cb.hidden_size}; use merge='concat'")
  c0f, c0b = (None, None) if carries is None else carries
  carry_f, ys_f = scan(cf, pf, xs, c0f, lengths=lengths, time_major=time_major, **scan_kw)
  carry_b, ys_b = scan(cb, pb, xs, c0b, lengths=lengths, reverse=True,
                       time_major=time_major, **scan_kw)
  ys = jnp.concatenate([ys_f, ys_b], axis=-1) if merge == "concat" else ys_f + ys_b
  return (carry_f, carry_b), ys


def dropout(key, x, rate: float):
  """Inverted dropout: zero each entry with probability ``rate``, scale the rest."""
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate must lie in [0, 1), got {rate}")
  if rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def _is_bidirectional(layer):
  return isinstance(layer, (tuple, list)) and len(layer) == 2 and \
      isinstance(layer[0], (tuple, list)) and isinstance(layer[0][0], base.Cell)


def stacked(layers: Sequence, xs, carries=None, *, lengths=None,
            residual: bool = False, dropout_rate: float = 0.0, key=None,
            merge: str = "concat", time_major: bool = True, **scan_kw):
  """A deep RNN: each layer's outputs are the next layer's inputs.

  Args:
    layers: a list of ``(cell, params)`` or bidirectional
      ``((cell_f, params_f), (cell_b, params_b))`` pairs.
    xs: ``[T, B, I]`` (or ``[B, T, I]`` with ``time_major=False``).
    carries: optional list of initial carries, one per layer.
    lengths: ``[B]`` valid lengths, used by every layer.
    residual: add each layer's input to its output where the sizes agree
      (from the second layer on); a mismatch is an error.
    dropout_rate: dropout on the outputs of every layer but the last
      (needs ``key``; pass 0 for evaluation).
    key: PRNG key for dropout.
    merge: how bidirectional layers merge their directions.
    **scan_kw: passed to `rnnjax.scan`.

  Returns:
    ``(carries, ys)``: the list of final carries and the last layer's outputs.
  """
  if not layers:
    raise ValueError("rnnjax.stacked: layers is empty; pass a list of (cell, params)")
  if dropout_rate and key is None:
    raise ValueError("rnnjax.stacked: dropout_rate > 0 needs key=...; pass dropout_rate=0.0 "
                     "for evaluation")
  if carries is not None and len(carries) != len(layers):
    raise ValueError(f"rnnjax.stacked: got {len(carries)} carries for {len(layers)} layers")
  keys = jax.random.split(key, len(layers)) if dropout_rate else [None] * len(layers)
  finals, h = [], xs
  for l, layer in enumerate(layers):
    c0 = None if carries is None else carries[l]
    if _is_bidirectional(layer):
      carry, ys = bidirectional(layer[0], layer[1], h, c0, lengths=lengths, merge=merge,
                                time_major=time_major, **scan_kw)
    else:
      cell, params = layer
      carry, ys = scan(cell, params, h, c0, lengths=lengths, time_major=time_major, **scan_kw)
    if residual and l > 0:
      if ys.shape != h.shape:
        raise ValueError(f"rnnjax.stacked: residual connection at layer {l} needs equal "
                         f"input and output shapes, got {h.shape} -> {ys.shape}")
      ys = ys + h
    if dropout_rate and l < len(layers) - 1:
      ys = dropout(keys[l], ys, dropout_rate)
    finals.append(carry)
    h = ys
  return finals, h


def init_stacked(key, cells: Sequence[base.Cell], input_size: int,
                 bidirectional: bool = False, merge: str = "concat"):
  """Layers for `stacked`: params for each cell, input sizes chained.

  With ``bidirectional=True`` each cell becomes a forward/backward pair
  (two independent param sets) and the next layer's input is ``2H``
  (``merge="concat"``) or ``H`` (``"sum"``).
  """
  layers, size = [], input_size
  for cell, k in zip(cells, jax.random.split(key, len(cells))):
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
  table: Array  # [V, E]


class Embedding(NamedTuple):
  """``init(key) -> EmbeddingParams`` and ``apply(params, ids) -> [..., E]``."""
  vocab_size: int
  features: int
  init: Any
  apply: Any


def embedding(vocab_size: int, features: int, *, scale: float = 1.0,
              param_dtype=jnp.float32) -> Embedding:
  """A lookup table ``E: [V, E]``; ``apply(params, ids) = E[ids]``.

  The lecture's embedding layer: one-hot ``x`` times ``E`` is a row lookup,
  and its gradient is a scatter-add of the output gradients into the rows
  that were used. Rows are initialised ``N(0, scale²)``.
  """
  base.check_positive_int("vocab_size", vocab_size, "rnnjax.embedding")
  base.check_positive_int("features", features, "rnnjax.embedding")

  def init(key):
    return EmbeddingParams(scale * jax.random.normal(key, (vocab_size, features), param_dtype))

  def apply(params, ids):
    ids = jnp.asarray(ids) if not hasattr(ids, "dtype") else ids
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise TypeError(f"rnnjax.embedding: ids must be integers, got dtype {ids.dtype} "
                      f"(shape {tuple(ids.shape)}); use ids.astype(jnp.int32)")
    values = base.concrete(ids)
    if values is not None and values.size:
      lo, hi = int(values.min()), int(values.max())
      if lo < 0 or hi >= vocab_size:
        raise ValueError(f"rnnjax.embedding: ids must lie in [0, V={vocab_size}), got min "
                         f"{lo} and max {hi}")
    return jnp.take(params.table, ids, axis=0)

  return Embedding(vocab_size, features, init, apply)
