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
from jax import lax

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
  boundary_penalty: float = 0.0,
  boundary_estimator: str = "straight_through",
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
    boundary_penalty: ``λ``, a boundary-rate term for the HM-LSTM's first
      level in training (``cell="hmlstm"`` only; a deviation from the paper,
      which has none): a training pass (``loss`` with a key) adds the gradient
      of ``λ · mean_{t,b} z_t^1`` (through the straight-through estimator),
      which makes every boundary cost ``λ`` nats, so the level keeps the
      boundaries that pay for themselves in the LM loss. The term is added as
      ``λ · (r - stop_gradient(r))``: its value is 0, so the reported loss stays
      the cross-entropy.
    boundary_estimator: how a training pass differentiates the HM-LSTM's
      boundaries: ``"straight_through"`` (the cell's own, the paper's) or
      ``"reinforce"``: boundaries drawn (`rnnjax.hmlstm_stochastic_step`) and
      their log-probabilities weighted by the cross-entropy from that step to
      the window's end, less its batch mean (the score-function estimator,
      unbiased and of higher variance). Evaluation keeps the deterministic
      boundaries either way.

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
  if (boundary_penalty or boundary_estimator != "straight_through") and not hm:
    raise ValueError(
      f"char_lm: boundary_penalty={boundary_penalty} and boundary_estimator="
      f"{boundary_estimator!r} are for cell='hmlstm' only (got cell={cell!r})"
    )
  if boundary_estimator not in ("straight_through", "reinforce"):
    raise ValueError(
      f"char_lm: boundary_estimator must be 'straight_through' or 'reinforce', "
      f"got {boundary_estimator!r}"
    )
  reinforce = boundary_estimator == "reinforce"
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

  def forward(
    params: CharLMParams,
    ids: jax.Array,
    carries: Any = None,
    key: jax.Array | None = None,
    **scan_kw: Any,
  ) -> tuple[list[Any], jax.Array, jax.Array, jax.Array | None]:
    train = key is not None
    keys: list[jax.Array | None] = [None] * (3 * len(cells) + 1)
    if key is not None:
      keys = list(jax.random.split(key, 3 * len(cells) + 1))
    drop = dropout if train else 0.0
    rates: list[jax.Array] = []
    logps: list[jax.Array] = []
    hs = rj.locked_dropout(keys.pop(), emb.apply(params.embed, ids), drop)  # [T, B, E]
    finals = []
    for l, (c, p) in enumerate(zip(cells, params.rnn, strict=True)):
      p = rj.weight_drop(keys.pop(), p, weight_drop if train else 0.0)
      carry0 = None if carries is None else carries[l]
      zkey = keys.pop()
      if (boundary_penalty or reinforce) and zkey is not None:  # training: the boundaries too
        shape = (*hs.shape[:-1], len(p.layers) - 1)  # [T, B, L - 1]
        u = jax.random.uniform(zkey, shape, hs.dtype) if reinforce else None
        carry, hs, z1, logp = _scan_boundaries(c, p, hs, carry0, u)
        rates.append(jnp.mean(z1))
        logps.append(logp)
      elif zoned is None:
        carry, hs = rj.scan(c, p, hs, carry0, **scan_kw)
      else:  # masks drawn with zkey for training, the expectation without a key
        xm = rj.zoneout_inputs(zkey, hs, zoned[l], zoneout)
        carry, hs = rj.scan(zoned[l], rj.ZoneoutParams(p), xm, carry0, **scan_kw)
      hs = rj.locked_dropout(keys.pop(), hs, drop)  # [T, B, H]
      finals.append(carry)
    # the boundary-rate term λ (r - sg(r)): value 0, the gradient of λ r
    extra = sum((boundary_penalty * (r - lax.stop_gradient(r)) for r in rates), jnp.zeros(()))
    return finals, head(params, hs), extra, (logps[0] if logps else None)  # [T, B, V]

  def apply(
    params: CharLMParams,
    ids: jax.Array,
    carries: Any = None,
    key: jax.Array | None = None,
    **scan_kw: Any,
  ) -> tuple[list[Any], jax.Array]:
    finals, logits, _, _ = forward(params, ids, carries, key, **scan_kw)
    return finals, logits

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
    carries, logits, extra, logp = forward(params, ids, carries, key, **scan_kw)
    nll = readout.cross_entropy(logits, targets)  # [T, B]
    if reinforce and logp is not None:  # the score-function term, of value 0
      to_go = jnp.flip(jnp.cumsum(jnp.flip(lax.stop_gradient(nll), 0), 0), 0)  # Σ_{t' >= t}
      advantage = to_go - jnp.mean(to_go, axis=1, keepdims=True)  # less the batch's mean
      score = jnp.mean(advantage * logp)
      extra = extra + score - lax.stop_gradient(score)
    return jnp.mean(nll) + extra.astype(logits.dtype), carries

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
      **(dict(boundary_penalty=boundary_penalty) if boundary_penalty else {}),
      **(dict(boundary_estimator=boundary_estimator) if reinforce else {}),
      **(dict(a_schedule=list(a_schedule)) if hm and a_schedule is not None else {}),
    ),
    anneal,
  )


def _scan_boundaries(
  cell: rj.Cell, p: Any, xs: jax.Array, carry0: Any, u: jax.Array | None
) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
  """`rnnjax.scan` of an HM-LSTM that also returns its first level's boundaries
  ``z^1: [T, B]`` (differentiable through the straight-through estimator) and
  the log-probability of the boundaries ``[T, B]``: drawn from the noise
  ``u: [T, B, L - 1]`` (`rnnjax.hmlstm_stochastic_step`), or with ``u=None``
  the cell's deterministic ones (log-probability 0)."""
  carry = cell.initial_carry(xs.shape[1:-1], xs.dtype) if carry0 is None else carry0

  def body(carry: Any, xu: Any) -> tuple[Any, tuple[jax.Array, jax.Array, jax.Array]]:
    x, u_t = xu
    if u_t is None:
      carry, y = cell.step(p, carry, x)
      logp = jnp.zeros(x.shape[:-1], x.dtype)
    else:
      carry, y, logp = rj.hmlstm_stochastic_step(p, carry, x, u_t)
    return carry, (y, carry.z[0][..., 0], logp)

  carry, (ys, z1, logp) = lax.scan(body, carry, (xs, u))
  return carry, ys, z1, logp
