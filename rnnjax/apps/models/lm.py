"""A character-level language model: embedding -> RNN layers -> softmax.

e_t = E[x_t]                       # [B, E]
h_t^{(l)} = RNN_l(h_t^{(l-1)}, h_{t-1}^{(l)})
ŷ_t = softmax(h_t^{(L)} U + b_y)   # the lecture's ŷ^t = softmax(U h^t + b_y)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import rnnjax as rj
from rnnjax.apps.models import readout


class CharLMParams(NamedTuple):
  embed: rj.EmbeddingParams
  rnn: tuple[Any, ...]  # one params NamedTuple per layer (one for the HM-LSTM)
  out: readout.DenseParams  # [H, V] and [V]: the lecture's Uᵀ and b_y
  hm_out: rj.HMLSTMOutputParams | None = None  # the HM-LSTM's gated output module


class CharLM(NamedTuple):
  """The model as pure functions (see `char_lm`)."""

  vocab_size: int
  cells: tuple[rj.Cell, ...]
  init: Callable[..., CharLMParams]
  initial_carry: Callable[[int], list[Any]]
  apply: Callable[..., tuple[list[Any], jax.Array]]
  loss: Callable[..., tuple[jax.Array, list[Any]]]
  sample: Callable[..., jax.Array]
  config: dict[str, Any]
  anneal: Callable[[CharLMParams, Any], CharLMParams] = lambda params, step: params
  """``anneal(params, step)``: the params the train step at ``step`` uses (the
  HM-LSTM's boundary slope from its schedule; the others unchanged)."""


def char_lm(
  vocab_size: int,
  hidden: int = 256,
  *,
  embed: int = 64,
  layers: int = 1,
  cell: str = "lstm",
  dropout: float = 0.0,
  weight_drop: float = 0.0,
  zoneout: float = 0.0,
  a_schedule: rj.SlopeAnnealing | None = None,
) -> CharLM:
  """A character LM with ``layers`` stacked cells of kind ``cell``.

  Args:
    vocab_size: V.
    hidden: H of every layer.
    embed: the embedding size E.
    layers: how many stacked cells.
    cell: a registered cell name (`rnnjax.cell_names`). ``"hmlstm"`` builds
      one `rnnjax.hmlstm` of ``layers`` levels of ``hidden`` units (at least
      two) whose gated output module (`rnnjax.hmlstm_output`, of size
      ``hidden``) feeds the softmax; its boundary slope follows the cell's
      schedule (``a_schedule``, default `rnnjax.slope_annealing()`) through
      ``anneal``.
    dropout: variational (locked) dropout on the embeddings and on every
      layer's outputs (`rnnjax.locked_dropout`), when ``apply``/``loss`` get a key.
    weight_drop: DropConnect on every layer's ``w_h`` (`rnnjax.weight_drop`),
      one mask per forward pass, when ``apply``/``loss`` get a key.
    zoneout: every layer's state units keep their previous value with this
      probability (`rnnjax.zoneout`); without a key, the expectation.
    a_schedule: the HM-LSTM's boundary slope schedule (``cell="hmlstm"`` only).

  Returns:
    A `CharLM` whose functions are
    ``init(key) -> CharLMParams``;
    ``initial_carry(batch) -> list of carries``;
    ``apply(params, ids [T, B], carries=None, key=None) -> (carries, logits [T, B, V])``;
    ``loss(params, ids, targets, carries=None, key=None) -> (mean nats per char, carries)``
    (with ``key``, a training pass: the regularisers are on; without, evaluation);
    ``sample(params, key, prime_ids [P], n, temperature=1.0) -> ids [n]``.
  """
  if layers < 1:
    raise ValueError(f"char_lm: layers must be >= 1, got {layers}")
  hm = cell == "hmlstm"
  if hm and (layers < 2 or weight_drop > 0 or zoneout > 0):
    raise ValueError(
      f"char_lm: the HM-LSTM needs layers >= 2 (its levels; got {layers}) and takes dropout "
      f"but neither weight_drop (got {weight_drop}) nor zoneout (got {zoneout}), which act "
      f"on a single cell's w_h and state"
    )
  cells = (
    (rj.hmlstm((hidden,) * layers, a_schedule=a_schedule),)
    if hm
    else tuple(rj.make_cell(cell, hidden) for _ in range(layers))
  )
  zoned = tuple(rj.zoneout(c) for c in cells) if zoneout > 0 else None
  emb = rj.embedding(vocab_size, embed)
  schedule = dict(cells[0].options).get("a_schedule") if hm else None

  def init(key: jax.Array) -> CharLMParams:
    ke, ko, *kl = jax.random.split(key, 2 + len(cells))
    kh = jax.random.fold_in(key, 1)  # the HM-LSTM's output module
    sizes = [embed] + [hidden] * (len(cells) - 1)
    return CharLMParams(
      embed=emb.init(ke),
      rnn=tuple(c.init(k, s) for c, k, s in zip(cells, kl, sizes, strict=True)),
      out=readout.init_dense(ko, hidden, vocab_size),
      hm_out=rj.init_hmlstm_output(kh, (hidden,) * layers, hidden) if hm else None,
    )

  def head(params: CharLMParams, hs: jax.Array) -> jax.Array:
    """Logits from the last layer's outputs (the HM-LSTM's: every level's, gated)."""
    if params.hm_out is not None:
      hs = rj.hmlstm_output(params.hm_out, hs)
    return readout.dense(params.out, hs)

  def anneal(params: CharLMParams, step: Any) -> CharLMParams:
    if schedule is None:
      return params
    return params._replace(rnn=(rj.set_slope(params.rnn[0], schedule(step)),))

  def initial_carry(batch: int) -> list[Any]:
    return [c.initial_carry((batch,)) for c in cells]

  def apply(
    params: CharLMParams,
    ids: jax.Array,
    carries: Any = None,
    key: jax.Array | None = None,
    **scan_kw: Any,
  ) -> tuple[list[Any], jax.Array]:
    train = key is not None
    keys: list[jax.Array | None] = [None] * (3 * len(cells) + 1)
    if key is not None:
      keys = list(jax.random.split(key, 3 * len(cells) + 1))
    drop = dropout if train else 0.0
    hs = rj.locked_dropout(keys.pop(), emb.apply(params.embed, ids), drop)  # [T, B, E]
    finals = []
    for l, (c, p) in enumerate(zip(cells, params.rnn, strict=True)):
      p = rj.weight_drop(keys.pop(), p, weight_drop if train else 0.0)
      carry0 = None if carries is None else carries[l]
      zkey = keys.pop()
      if zoned is None:
        carry, hs = rj.scan(c, p, hs, carry0, **scan_kw)
      else:  # masks drawn with zkey for training, the expectation without a key
        xm = rj.zoneout_inputs(zkey, hs, zoned[l], zoneout)
        carry, hs = rj.scan(zoned[l], rj.ZoneoutParams(p), xm, carry0, **scan_kw)
      hs = rj.locked_dropout(keys.pop(), hs, drop)  # [T, B, H]
      finals.append(carry)
    return finals, head(params, hs)  # [T, B, V]

  def step_layers(params: CharLMParams, carries: list[Any], x: jax.Array) -> tuple[list[Any], Any]:
    """One step of every layer (evaluation: zoneout at its expectation)."""
    if zoned is None:
      return rj.stacked_step(list(zip(cells, params.rnn, strict=True)), carries, x)
    new = []
    for zc, p, carry in zip(zoned, params.rnn, carries, strict=True):
      carry, x = zc.step(rj.ZoneoutParams(p), carry, rj.zoneout_inputs(None, x, zc, zoneout))
      new.append(carry)
    return new, x

  def loss(
    params: CharLMParams,
    ids: jax.Array,
    targets: jax.Array,
    carries: Any = None,
    key: jax.Array | None = None,
    **scan_kw: Any,
  ) -> tuple[jax.Array, list[Any]]:
    carries, logits = apply(params, ids, carries, key, **scan_kw)
    return jnp.mean(readout.cross_entropy(logits, targets)), carries

  @partial(jax.jit, static_argnames=("n",))
  def sample(
    params: CharLMParams, key: jax.Array, prime_ids: jax.Array, n: int, temperature: float = 1.0
  ) -> jax.Array:
    carries, logits = apply(params, prime_ids[:, None], initial_carry(1))

    def body(state: Any, k: jax.Array) -> tuple[Any, jax.Array]:
      carries, logits = state
      nxt = jax.random.categorical(k, logits / temperature)
      carries, h = step_layers(params, carries, emb.apply(params.embed, nxt[None]))
      return (carries, head(params, h)[0]), nxt

    _, out = jax.lax.scan(body, (carries, logits[-1, 0]), jax.random.split(key, n))
    return out

  return CharLM(
    vocab_size,
    cells,
    init,
    initial_carry,
    apply,
    loss,
    sample,
    dict(
      vocab_size=vocab_size,
      hidden=hidden,
      embed=embed,
      layers=layers,
      cell=cell,
      dropout=dropout,
      weight_drop=weight_drop,
      zoneout=zoneout,
      **(dict(a_schedule=list(a_schedule)) if hm and a_schedule is not None else {}),
    ),
    anneal,
  )
