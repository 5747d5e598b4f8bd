"""``rnnjax explore``: one self-contained HTML page to find what a cell tracks
and where its gradient dies.

The page has three panels, all drawn by the page's own JavaScript from data
embedded in it (no server, network or CDN):

* **Text view**: the text coloured by one cell's state (``h`` or ``c``, any of
  the H cells of any layer), a colour bar naming the quantity and its range,
  the exact (quantised) value on hover, and a strip under each line showing a
  feature of the text (`rnnjax.apps.interpret.FEATURE_DEFINITIONS`).
* **Hypothesis selection** (after LSTMVis, Strobelt et al. 2018): select one
  or more ranges of text, and the page ranks the cells by `selection_scores`,
  the correlation of each cell's state with the selection (its mean inside
  minus its mean elsewhere, in units of its own spread; elsewhere: the rest of
  the text, or ``pad`` characters on either side); or pick a feature, and it
  ranks them by `feature_scores`, the Pearson correlation with the feature
  over the text. It then marks every position where the chosen cells all match
  the pattern (`match_positions`). The functions here are the reference the
  page's JavaScript is tested against.
* **Gradient flow**: for each exported position ``t``, ``‖∂L_t/∂s_k‖₂``
  against ``k`` back along the text (`rnnjax.jacobian.gradient_norms_vs_lag`),
  the picked cell's share of it, the step Jacobian's spectral norm
  ``‖∂s_t/∂s_(t-1)‖₂`` (`rnnjax.jacobian.step_jacobians`) and its singular
  values.

States are stored as one byte per (character, cell): ``q = round(127 v / m) +
128`` with ``m`` the cell's largest ``|v|`` over the text, so a shown value
is exact to ``m / 254``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import jacobian
from rnnjax.apps import interpret, io
from rnnjax.apps.io import StrPath

if TYPE_CHECKING:
  from rnnjax.apps.data import Vocab
  from rnnjax.apps.models import CharLM, CharLMParams

LAGS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192)
"""The lags at which the page stores each cell's share of ``∂L_t/∂s_k``."""

DECADES = 8.0
"""The range, in powers of 10 below each position's largest entry, of the stored per-cell
gradient magnitudes (smaller ones are stored as 0 and not drawn)."""

QUANTITIES = {"c": "LSTM cell state c", "h": "hidden state h"}


# ----------------------------------------------------------------- quantisation


def quantise(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """One byte per value, per-cell symmetric: ``(q [N, H] uint8, scale [H])``.

  ``q = round(127 v / scale) + 128`` with ``scale`` the cell's largest ``|v|``
  (1 for an all-zero cell); `dequantise` inverts it to within ``scale / 254``.

  Examples:
    >>> import numpy as np
    >>> q, m = quantise(np.array([[-2.0, 0.0], [1.0, 0.0]]))
    >>> q.tolist(), m.tolist()
    ([[1, 128], [192, 128]], [2.0, 1.0])
  """
  states = np.asarray(states, np.float64)
  if states.ndim != 2:
    raise ValueError(f"quantise: states must be [N, H], got shape {states.shape}")
  scale = np.abs(states).max(0) if len(states) else np.ones(states.shape[1])
  scale = np.where(scale > 0, scale, 1.0)
  q = np.clip(np.rint(127 * states / scale), -127, 127) + 128
  return q.astype(np.uint8), scale


def normalised(q: np.ndarray) -> np.ndarray:
  """The quantised states over their cell's scale, in [-1, 1]: ``(q - 128) / 127``."""
  return (np.asarray(q, np.float64) - 128) / 127


def dequantise(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """The states `quantise` stored: ``(q - 128) / 127 * scale``."""
  return normalised(q) * np.asarray(scale, np.float64)


# ----------------------------------------------------------------- hypothesis selection


def _ranges(n: int, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
  """The characters of ``ranges`` (``[start, stop]``, inclusive) as an ``[N]`` mask."""
  if len(ranges) == 0:
    raise ValueError("selection_scores: no range selected; give at least one (start, stop)")
  inside = np.zeros(n, bool)
  for start, stop in ranges:
    if not 0 <= start <= stop < n:
      raise ValueError(
        f"selection_scores: the range [{start}, {stop}] must satisfy 0 <= start <= stop < N = {n}"
      )
    inside[start : stop + 1] = True
  return inside


def selection_scores(
  q: np.ndarray, ranges: Sequence[tuple[int, int]], pad: int | None = None
) -> dict[str, np.ndarray]:
  """How much each cell is on (or off) in the selected ranges and not elsewhere.

  The selection is one or more ranges of characters; "elsewhere" is the rest of
  the text, or with ``pad`` the ``pad`` characters before and after each range
  that are not selected themselves (LSTMVis's padding; the rest of the text
  when that leaves none). The score is the Pearson correlation, over the
  selected and elsewhere characters, between the cell's state ``a`` and the
  selection (1 inside, 0 elsewhere):

      score = (mean(a inside) - mean(a elsewhere)) * sqrt(n_in n_out) / (n sd(a)),

  with ``sd`` the cell's standard deviation over those ``n = n_in + n_out``
  characters (the point-biserial correlation). Dividing by each cell's own
  spread puts cells of small and large ranges on one scale, so a cell that
  moves by little but cleanly ranks above one that moves by more in the
  middle of a wide spread; and selecting every character where a 0/1 feature
  is 1 ranks the cells as `feature_scores` does for that feature. The page
  ranks cells by ``|score|`` (or by ``score`` for cells on there only, by
  ``-score`` for cells off there only), ties by cell index.

  Args:
    q: quantised states ``[N, H]`` (`quantise`).
    ranges: the selected ranges, ``(start, stop)`` with ``stop`` inclusive.
    pad: characters on either side of each range that make "elsewhere"
      (default: the whole rest of the text).

  Returns:
    ``{"score": [H], "inside": [H], "around": [H]}``: the score and the two
    means of ``a = (q - 128) / 127`` (the state over the cell's largest |value|).

  Raises:
    ValueError: no range, a range outside the text, or a negative ``pad``.

  Examples:
    >>> import numpy as np
    >>> q = np.full((6, 2), 128, np.uint8); q[2:4, 1] = 255
    >>> selection_scores(q, [(2, 3)])["score"].round(12).tolist()
    [0.0, 1.0]
  """
  n = len(q)
  inside = _ranges(n, ranges)
  if pad is not None and pad < 0:
    raise ValueError(
      f"selection_scores: pad must be >= 0 or None (the rest of the text), got {pad}"
    )
  around = np.zeros(n, bool)
  if pad is not None:
    for start, stop in ranges:
      around[max(0, start - pad) : start] = True
      around[stop + 1 : stop + 1 + pad] = True
    around &= ~inside
  if not around.any():
    around = ~inside
  # in whole bytes x = q - 128, so the sums are exact integers here and in the page:
  # score = (S_in n_out - S_out n_in) / (sqrt(n_in n_out) sqrt(n SS - S^2)), S = S_in + S_out
  x = np.asarray(q, np.int64) - 128
  n_in, n_out = int(inside.sum()), int(around.sum())
  s_in, s_out = x[inside].sum(0), x[around].sum(0)
  m_in = s_in / n_in / 127  # the means of a = x / 127, computed as the page does
  if n_out == 0:  # the whole text is selected: nothing to compare with
    return dict(score=np.zeros(x.shape[1]), inside=m_in, around=np.zeros(x.shape[1]))
  m_out = s_out / n_out / 127
  ss = (x[inside | around] ** 2).sum(0)
  num = s_in * n_out - s_out * n_in
  var = (n_in + n_out) * ss - (s_in + s_out) ** 2  # n^2 127^2 sd(a)^2, an integer
  den = math.sqrt(n_in * n_out) * np.sqrt(np.maximum(var, 1))
  score = np.where(var > 0, num / den, 0.0)
  return dict(score=score, inside=m_in, around=m_out)


def range_scores(
  q: np.ndarray, start: int, stop: int, pad: int | None = None
) -> dict[str, np.ndarray]:
  """`selection_scores` for one range ``text[start : stop + 1]``.

  Examples:
    >>> import numpy as np
    >>> q = np.full((6, 2), 128, np.uint8); q[2:4, 1] = 255
    >>> range_scores(q, 2, 3)["score"].round(12).tolist()
    [0.0, 1.0]
  """
  return selection_scores(q, [(start, stop)], pad)


def feature_scores(q: np.ndarray, feature: np.ndarray) -> dict[str, np.ndarray]:
  """Each cell's Pearson correlation with a feature over the text (`interpret.best_cells`'
  formula), and its mean normalised state where the feature is above / at most its mean.

  Args:
    q: quantised states ``[N, H]``.
    feature: ``[N]`` values.

  Returns:
    ``{"score": [H] (r), "inside": [H], "around": [H]}``.

  Raises:
    ValueError: ``feature`` does not have one value per character, or is constant.
  """
  a = normalised(q)
  f = np.asarray(feature, np.float64)
  if f.shape != (len(a),):
    raise ValueError(f"feature_scores: feature must be [N = {len(a)}], got shape {f.shape}")
  fc = f - f.mean()
  if not np.any(fc):
    raise ValueError("feature_scores: the feature is constant over the text; nothing to rank")
  ac = a - a.mean(0)
  r = (ac * fc[:, None]).sum(0) / (np.sqrt((ac**2).sum(0)) * np.sqrt((fc**2).sum()) + 1e-12)
  high = f > f.mean()
  return dict(score=r, inside=a[high].mean(0), around=a[~high].mean(0))


def rank(scores: dict[str, np.ndarray], sign: str = "both") -> list[int]:
  """Cells by ``|score|`` (``sign="both"``), by ``score`` (``"on"``: on there, off
  elsewhere) or by ``-score`` (``"off"``: off there, on elsewhere), ties by index."""
  if sign not in ("both", "on", "off"):
    raise ValueError(f"rank: sign must be 'both', 'on' or 'off', got {sign!r}")
  s = np.asarray(scores["score"], np.float64)
  key = {"both": -np.abs(s), "on": -s, "off": s}[sign]
  return [int(i) for i in np.lexsort((np.arange(len(s)), key))]


def match_positions(
  q: np.ndarray, cells: Sequence[int], scores: dict[str, np.ndarray]
) -> np.ndarray:
  """Where all ``cells`` show the selected pattern: ``[N]`` bool.

  Cell ``i`` matches at ``t`` when ``sign_i (a_i(t) - θ_i) > 0``, with
  ``θ_i`` halfway between its means inside and around the selection and
  ``sign_i`` the sign of its score (+ for 0).
  """
  a = normalised(q)
  ok = np.ones(len(a), bool)
  for i in cells:
    theta = (scores["inside"][i] + scores["around"][i]) / 2
    sgn = 1.0 if scores["score"][i] >= 0 else -1.0
    ok &= sgn * (a[:, i] - theta) > 0
  return ok


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """The maximal runs of ``True`` in ``mask`` as ranges ``(start, stop)``, ``stop``
  inclusive: the selection the page's *select the matches* makes of `match_positions`.

  Examples:
    >>> runs(np.array([0, 1, 1, 0, 1], bool))
    [(1, 2), (4, 4)]
  """
  on = np.flatnonzero(np.asarray(mask, bool))
  if len(on) == 0:
    return []
  cut = np.diff(on) > 1
  starts, stops = on[np.r_[True, cut]], on[np.r_[cut, True]]
  return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


# ----------------------------------------------------------------- gradient flow


def _state_gradients(cell: Any, params: Any, xs: jax.Array, carry: Any, g: jax.Array) -> jax.Array:
  """``∂L/∂s_k`` for k = 0..T (``[T + 1, S]``) where ``∂L/∂s_T = g``: the vectors whose
  norms `rnnjax.jacobian.gradient_norms_vs_lag` returns."""

  def run(eps: jax.Array) -> jax.Array:
    def body(c: Any, inp: tuple[jax.Array, jax.Array]) -> tuple[Any, None]:
      x, e = inp
      new, _ = cell.step(params, c, x)
      return jacobian.unflatten_state(cell, jacobian.flatten_state(cell, new) + e, carry), None

    c0 = jacobian.unflatten_state(cell, jacobian.flatten_state(cell, carry) + eps[0], carry)
    final, _ = jax.lax.scan(body, c0, (xs, eps[1:]))
    return jnp.vdot(g, jacobian.flatten_state(cell, final))

  return jax.grad(run)(jnp.zeros((xs.shape[0] + 1, cell.state_size), g.dtype))


_norms_jit = jax.jit(jacobian.gradient_norms_vs_lag, static_argnums=0)
_grads_jit = jax.jit(_state_gradients, static_argnums=0)


def default_positions(n: int, every: int = 50) -> list[int]:
  """Every ``every``-th character that has a next one to predict: ``every-1, 2 every-1, …``."""
  if every < 1:
    raise ValueError(f"default_positions: every must be >= 1, got {every}")
  return list(range(every - 1, n - 1, every))


def gradient_flow(
  cell: Any,
  params: Any,
  xs: np.ndarray,
  carries: Any,
  dL_ds: np.ndarray,
  positions: Sequence[int],
  window: int = 200,
  lags: Sequence[int] = LAGS,
) -> dict[str, Any]:
  """The gradient-flow data of the page, for one layer.

  ``s_k`` is the layer's state after character ``k`` (``s_{-1}``: the zero
  state); position ``t``'s loss ``L_t`` has ``∂L_t/∂s_t = dL_ds[p]``.

  Args:
    cell: the layer's cell.
    params: its params.
    xs: the layer's input at each character ``[N, I]``.
    carries: its carry after each character (leaves ``[N, ...]``).
    dL_ds: ``[P, S]``, ``∂L_t/∂s_t`` for each position.
    positions: the ``P`` positions ``t``.
    window: how many characters back to follow the gradient.
    lags: the lags at which each cell's share is kept.

  Returns:
    ``positions``, ``first`` (the character of each row's first norm: ``t - window``, or
    -1 for the zero state), ``norms [P, window + 1]`` (``‖∂L_t/∂s_k‖₂`` for k = first..t,
    NaN after a short row's end), ``cell_grad [P, len(lags), H]`` (``‖∂L_t/∂s_(t-lag)‖``
    restricted to cell i's entries: its h and c for the LSTM; NaN before the text),
    ``spectral [P]`` (``‖∂s_t/∂s_(t-1)‖₂``) and ``sv [P, S]`` (its singular values).

  Raises:
    ValueError: a position is outside ``[0, N - 1)``, or ``window < 1``.
  """
  n = len(xs)
  if window < 1:
    raise ValueError(f"gradient_flow: window must be >= 1, got {window}")
  bad = [t for t in positions if not 0 <= t < n]
  if bad:
    raise ValueError(f"gradient_flow: positions {bad[:5]} are outside the text [0, {n})")
  S, H = cell.state_size, cell.hidden_size
  zero = cell.initial_carry(())
  dtype = jnp.asarray(xs).dtype

  def before(k: int) -> Any:  # the carry before character k
    if k == 0:
      return jax.tree.map(lambda z: jnp.asarray(z, dtype), zero)
    return jax.tree.map(lambda c: jnp.asarray(c[k - 1]), carries)

  P, L = len(positions), len(lags)
  norms = np.full((P, window + 1), np.nan)
  cell_grad = np.full((P, L, H), np.nan)
  first = np.zeros(P, int)
  spectral, sv = np.zeros(P), np.zeros((P, S))
  for p, t in enumerate(positions):
    k0 = max(0, t + 1 - window)
    x = jnp.asarray(xs[k0 : t + 1])
    g = jnp.asarray(dL_ds[p], dtype)
    row = np.asarray(_norms_jit(cell, params, x, before(k0), g))
    norms[p, : len(row)] = row
    first[p] = k0 - 1
    full = np.asarray(_grads_jit(cell, params, x, before(k0), g))  # [len(row), S]
    per_cell = np.sqrt((full.reshape(len(full), S // H, H) ** 2).sum(1))  # [len(row), H]
    for j, lag in enumerate(lags):
      if lag < len(row):
        cell_grad[p, j] = per_cell[len(row) - 1 - lag]
    J = jacobian.step_jacobians(cell, params, jnp.asarray(xs[t : t + 1]), before(t))[0]
    sv[p] = np.linalg.svd(np.asarray(J, np.float64), compute_uv=False)
    spectral[p] = sv[p, 0]
  return dict(
    positions=[int(t) for t in positions],
    first=first,
    norms=norms,
    lags=list(lags),
    cell_grad=cell_grad,
    spectral=spectral,
    sv=sv,
    window=window,
  )


def readout_gradients(
  model: CharLM, params: CharLMParams, top_carries: Any, ids: np.ndarray, positions: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
  """``∂L_t/∂s_t`` of the top layer's state ``[P, S]`` and ``L_t`` ``[P]``, where
  ``L_t = -log p(ids[t + 1] | ids[..t])`` is the model's cross-entropy at ``t``."""
  from rnnjax.apps.models import readout

  cell = model.cells[-1]
  like = cell.initial_carry(())

  def loss(s: jax.Array, target: jax.Array) -> jax.Array:
    carry = jacobian.unflatten_state(cell, s, like)
    y: Any = getattr(carry, "h", carry)
    return readout.cross_entropy(readout.dense(params.out, y[None]), target[None])[0]

  pos = np.asarray(positions, int)
  s = jacobian.flatten_state(cell, jax.tree.map(lambda c: jnp.asarray(c)[pos], top_carries))
  targets = jnp.asarray(np.asarray(ids)[pos + 1])
  values, grads = jax.vmap(jax.value_and_grad(loss))(s, targets)
  return np.asarray(grads), np.asarray(values)


# ----------------------------------------------------------------- the page


def _b64(a: np.ndarray) -> str:
  return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _cell_labels(q: np.ndarray, features: dict[str, np.ndarray], kind: str) -> list[str]:
  """``"cell i (c: in_quotes r=+0.61)"``: each cell's best-correlated feature."""
  a = normalised(q)
  ac = a - a.mean(0)
  an = np.sqrt((ac**2).sum(0)) + 1e-12
  best_r, best_name = np.zeros(a.shape[1]), [""] * a.shape[1]
  for name, f in features.items():
    fc = np.asarray(f, np.float64) - np.mean(f)
    if not np.any(fc):
      continue
    r = (ac * fc[:, None]).sum(0) / (an * np.sqrt((fc**2).sum()))
    for i in np.flatnonzero(np.abs(r) > np.abs(best_r)):
      best_r[i], best_name[i] = r[i], name
  return [
    f"cell {i}" + (f" ({kind}: {best_name[i]} r={best_r[i]:+.2f})" if best_name[i] else "")
    for i in range(a.shape[1])
  ]


def page_data(
  text: str,
  layers: Sequence[dict[str, np.ndarray]],
  gradient: dict[str, Any] | None = None,
  title: str = "rnnjax explore",
  layer_names: Sequence[str] | None = None,
) -> dict[str, Any]:
  """The JSON the page embeds: quantised states, features and gradient flow.

  Args:
    text: the text, ``N`` characters.
    layers: per layer, ``{"c": [N, H], "h": [N, H]}`` (``"c"`` only for cells that have one).
    gradient: `gradient_flow`'s result for one layer (with a ``"layer"`` index and
      ``"loss"`` ``[P]``), or None for no gradient panel.
    title: the page's title.
    layer_names: one name per layer (default ``"layer l"``).

  Returns:
    A JSON-ready dict.

  Raises:
    ValueError: a layer has no ``"h"``, or a state is not ``[N, H]``.
  """
  n = len(text)
  features = interpret.text_features(text)
  out_layers = []
  for li, states in enumerate(layers):
    if "h" not in states:
      raise ValueError(f"page_data: layer {li} has no 'h' states; got keys {sorted(states)}")
    kinds = [k for k in ("c", "h") if k in states]
    entry: dict[str, Any] = dict(
      name=layer_names[li] if layer_names else f"layer {li}",
      kinds=kinds,
      quantity={k: QUANTITIES[k] for k in kinds},
      q={},
      scale={},
    )
    for k in kinds:
      s = np.asarray(states[k])
      if s.ndim != 2 or s.shape[0] != n:
        raise ValueError(
          f"page_data: layer {li} '{k}' states must be [N = {n}, H], got shape {s.shape}"
        )
      q, scale = quantise(s)
      entry["q"][k] = _b64(q)
      entry["scale"][k] = [float(f"{v:.6g}") for v in scale]
      entry["H"] = s.shape[1]
    entry["labels"] = _cell_labels(quantise(np.asarray(states[kinds[0]]))[0], features, kinds[0])
    out_layers.append(entry)
  data: dict[str, Any] = dict(
    title=title,
    text=text,
    layers=out_layers,
    features=dict(
      names=list(interpret.FEATURES),
      titles=dict(interpret.FEATURE_TITLES),
      definitions=dict(interpret.FEATURE_DEFINITIONS),
      values={k: [int(v) for v in f] for k, f in features.items()},
    ),
    grad=None,
  )
  if gradient is not None:
    g = gradient
    cg = np.asarray(g["cell_grad"], np.float64)  # [P, L, H]
    with np.errstate(divide="ignore", invalid="ignore"):
      logs = np.log10(np.where(cg > 0, cg, np.nan))
    top = np.nan_to_num(np.nanmax(logs.reshape(len(cg), -1), axis=1, initial=-np.inf), neginf=0.0)
    cq = np.rint(255 * (logs - (top[:, None, None] - DECADES)) / DECADES)
    cq = np.where(np.isnan(cq) | (cq < 1), 0, np.minimum(cq, 255)).astype(np.uint8)
    data["grad"] = dict(
      layer=int(g.get("layer", len(layers) - 1)),
      window=int(g["window"]),
      positions=list(g["positions"]),
      first=[int(v) for v in g["first"]],
      norms=_b64(np.asarray(g["norms"], np.float32)),
      lags=list(g["lags"]),
      cell_q=_b64(cq),
      cell_top=[float(f"{v:.6g}") for v in top],
      decades=DECADES,
      spectral=[float(f"{v:.6g}") for v in g["spectral"]],
      S=int(np.shape(g["sv"])[1]),
      sv=_b64(np.asarray(g["sv"], np.float32)),
      loss=[None if not math.isfinite(v) else float(f"{v:.5g}") for v in g.get("loss", [])]
      or [None] * len(g["positions"]),
    )
  return data


def page(data: dict[str, Any]) -> str:
  """The self-contained HTML page for `page_data`'s ``data``."""
  blob = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
  blob = blob.replace("</", "<\\/")
  title = html.escape(data["title"])
  return (
    _TEMPLATE.replace("__TITLE__", title)
    .replace("__CSS__", _CSS)
    .replace("__JS__", _JS)
    .replace("__DATA__", blob)
  )


def explore(
  model: CharLM,
  params: CharLMParams,
  vocab: Vocab,
  text: str,
  out: StrPath,
  *,
  every: int = 50,
  window: int = 200,
  title: str | None = None,
) -> dict[str, Any]:
  """Write the explorer page for a char model read over ``text``.

  Args:
    model: a char model of plain stacked cells (not the HM-LSTM).
    params: its params.
    vocab: its vocabulary.
    text: the text to show (``N`` characters, at least 2).
    out: the HTML file to write.
    every: the gradient panel's positions are every ``every``-th character.
    window: how many characters back the gradient is followed.
    title: the page's title.

  Returns:
    ``{"path", "bytes", "positions", "chars", "cells"}``.

  Raises:
    ValueError: the model is an HM-LSTM, or the text is shorter than 2 characters.
  """
  if getattr(params, "hm_out", None) is not None:
    raise ValueError(
      "explore: the HM-LSTM's levels are not plain stacked cells; explore a run trained "
      "with --cell lstm, gru or another single cell"
    )
  if len(text) < 2:
    raise ValueError(f"explore: the text has {len(text)} characters; it needs at least 2")
  carries, inputs = interpret.layer_trace(model, params, vocab, text)
  layers = []
  for c in carries:
    layers.append(
      {"h": np.asarray(c.h), "c": np.asarray(c.c)} if hasattr(c, "c") else {"h": np.asarray(c)}
    )
  positions = default_positions(len(text), every)
  gradient = None
  if positions:
    top = len(model.cells) - 1
    ids = np.asarray(vocab.encode(text))
    dL, losses = readout_gradients(model, params, carries[top], ids, positions)
    gradient = gradient_flow(
      model.cells[top], params.rnn[top], inputs[top], carries[top], dL, positions, window
    )
    gradient.update(layer=top, loss=losses)
  names = [f"layer {i} ({model.config.get('cell', 'cell')})" for i in range(len(layers))]
  data = page_data(text, layers, gradient, title or "rnnjax explore", names)
  path = io.atomic_write_text(out, page(data))
  return dict(
    path=path,
    bytes=path.stat().st_size,
    positions=positions,
    chars=len(text),
    cells=[len(layer["h"][0]) for layer in layers],
  )


# ----------------------------------------------------------------- HTML, CSS, JS

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>__CSS__</style></head><body>
<h1>__TITLE__</h1>
<p class="note">Everything on this page runs in it: no server, no network. Open it from disk.
States are stored as one byte per character and cell: a value is exact to 1/254 of the
cell's largest |value| over the text.</p>
<section id="p-text"><h2>1. Text view</h2>
<div class="controls">
<label>layer <select id="layer"></select></label>
<label><input type="radio" name="kind" id="kind-c" value="c"> c</label>
<label><input type="radio" name="kind" id="kind-h" value="h"> h</label>
<button id="prev" title="previous cell">&#9664;</button>
<label>cell <select id="cell"></select></label>
<button id="next" title="next cell">&#9654;</button>
<label>strip <select id="strip"></select></label>
</div>
<div id="bar"><span id="bar-label"></span> <span id="bar-lo"></span>
<span class="cbar"></span> <span id="bar-hi"></span></div>
<p id="legend" class="note"></p>
<div id="hover" class="info">hover over a character for its exact value</div>
<div id="text"></div>
</section>
<section id="p-hyp"><h2>2. Hypothesis selection</h2>
<p class="note">Select a range of the text with the mouse (hold Ctrl, or &#8984; on a Mac,
to add another range), or type ranges such as <code>40-49, 120-131</code>, and the page ranks
the current layer's cells (h or c, as shown) by <b>score = the correlation between the cell's
state and the selection</b> (1 on a selected character, 0 elsewhere): the cell's mean inside
minus its mean elsewhere, in units of its own spread (standard deviation), so cells of small
and large ranges compare on one scale. "Elsewhere" is the rest of the text, or, with a
<i>pad</i>, that many characters on either side of each range (LSTMVis's padding). Cells rank
by |score| (on there and off elsewhere, or off there and on elsewhere), or by one sign.
Ranking by a feature uses the Pearson correlation r with it over the whole text instead:
selecting every character where a 0/1 feature is 1 gives the same ranking. The ticked cells
then mark (underlined in the text) every position where all of them match the pattern: the
state above (or, for a negative score, below) halfway between its two means; <i>select the
matches</i> makes those positions the selection, to rank again.</p>
<div class="controls">
<label>ranges <input id="ranges" type="text" size="30" placeholder="e.g. 40-49, 120-131"></label>
<label>pad <input id="pad" type="number" min="0" value="" placeholder="rest of text"></label>
<label>cells <select id="sign"><option value="both">on or off there (|score|)</option>
<option value="on">on there only (score)</option>
<option value="off">off there only (&minus;score)</option></select></label>
<button id="rank">rank cells for the selection</button>
<label>or feature <select id="feature"></select></label>
<button id="rank-feature">rank cells by the feature</button>
</div>
<p id="sel-info" class="info"></p>
<table id="ranking"><thead><tr><th>match</th><th>rank</th><th>cell</th><th>score</th>
<th>mean inside</th><th>mean elsewhere</th></tr></thead><tbody></tbody></table>
<div class="controls"><button id="match">mark where the ticked cells match</button>
<button id="select-matches">select the matches</button>
<button id="clear-match">clear marks</button></div>
<p id="match-info" class="info"></p>
</section>
<section id="p-grad"><h2>3. Gradient flow along the text</h2>
<p class="note" id="grad-note"></p>
<div class="controls"><label>position t <select id="gpos"></select></label></div>
<p id="g-info" class="info"></p>
<svg id="g-lag" width="960" height="260"></svg>
<div id="g-text"></div>
<svg id="g-spec" width="960" height="200"></svg>
<svg id="g-sv" width="960" height="220"></svg>
<p id="sv-info" class="info"></p>
</section>
<script id="data" type="application/json">__DATA__</script>
<script>__JS__</script>
</body></html>
"""

_CSS = """
body{font:14px sans-serif;margin:12px 20px;max-width:1000px}
h1{font-size:20px}h2{font-size:16px;margin-top:22px;border-bottom:1px solid #ccc}
.note{color:#333;font-size:13px}.info{font:12px monospace;color:#222;min-height:1.3em}
.controls{margin:6px 0}.controls label{margin-right:10px}
#text{font:12px/1 monospace;white-space:pre;max-height:520px;overflow:auto;border:1px solid #ccc;
padding:4px}
.ln{height:18px}.ln span.c{display:inline-block;width:7.3px;height:14px;line-height:14px;
text-align:center;overflow:visible}
.st{height:5px;line-height:0;font-size:0;margin-bottom:3px}
.st span{display:inline-block;width:7.3px;height:5px;vertical-align:top}
span.nl{color:#999}span.m{box-shadow:inset 0 -3px 0 #000}span.pos{outline:2px solid #0a0}
.cbar{display:inline-block;width:240px;height:12px;vertical-align:middle;border:1px solid #888;
background:linear-gradient(to right,rgb(0,0,255),rgb(255,255,255),rgb(255,0,0))}
#ranking{border-collapse:collapse;font:12px monospace}#ranking td,#ranking th{padding:1px 8px;
border-bottom:1px solid #eee;text-align:right}#ranking a{cursor:pointer;color:#03c}
svg{display:block;margin:6px 0;background:#fafafa}svg text{font:10px sans-serif}
#g-text{font:11px monospace;white-space:pre;overflow-x:auto}
"""

_JS = r"""
'use strict';
const D = JSON.parse(document.getElementById('data').textContent);
const TEXT = Array.from(D.text);  // code points, as Python indexes them
const N = TEXT.length;
function u8(s) { const b = atob(s); const a = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) a[i] = b.charCodeAt(i); return a; }
function f32(s) { return new Float32Array(u8(s).buffer); }
const Q = D.layers.map(L => {
  const o = {}; for (const k of L.kinds) o[k] = u8(L.q[k]); return o; });
const $ = id => document.getElementById(id);
const st = { layer: 0, kind: D.layers[0].kinds[0], cell: 0, strip: 'in_quotes', scores: null,
  order: [], pos: 0, hovered: -1, matches: [] };
// the colours of rnnjax.apps.interpret: blue (-1), white (0), red (+1)
function colour(a) {
  a = Math.max(-1, Math.min(1, a));
  if (a >= 0) { const g = Math.trunc(255 * (1 - a)); return 'rgb(255,' + g + ',' + g + ')'; }
  const g = Math.trunc(255 * (1 + a)); return 'rgb(' + g + ',' + g + ',255)';
}
function H() { return D.layers[st.layer].H; }
function norm(t, i) { return (Q[st.layer][st.kind][t * H() + i] - 128) / 127; }
function value(t, i) { return norm(t, i) * D.layers[st.layer].scale[st.kind][i]; }
function esc(c) { return c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c; }
// ---- text view
const spans = [], strips = [];
function buildText() {
  let h = '', line = '', strip = '';
  for (let t = 0; t < N; t++) {
    const ch = TEXT[t];
    const shown = ch === '\n' ? '\u21b5' : ch === '\t' ? '\u2192' : esc(ch);
    line += '<span class="c' + (ch === '\n' ? ' nl' : '') + '" data-i="' + t + '">' + shown +
      '</span>';
    strip += '<span data-i="' + t + '"></span>';
    if (ch === '\n' || t === N - 1) {
      h += '<div class="ln">' + line + '</div><div class="st">' + strip + '</div>';
      line = ''; strip = '';
    }
  }
  $('text').innerHTML = h;
  for (const s of $('text').querySelectorAll('.ln span')) spans.push(s);
  for (const s of $('text').querySelectorAll('.st span')) strips.push(s);
}
function recolour() {
  const i = st.cell;
  for (let t = 0; t < N; t++) spans[t].style.background = colour(norm(t, i));
  if (st.hovered >= 0) hover(st.hovered);
  const L = D.layers[st.layer], m = L.scale[st.kind][i];
  $('bar-label').textContent = L.quantity[st.kind] + ' of cell ' + i + ' (' + L.name + '):';
  $('bar-lo').textContent = (-m).toPrecision(4);
  $('bar-hi').textContent = '+' + m.toPrecision(4) + ' (blue negative, white 0, red positive;' +
    ' the scale is the cell\'s largest |value| over the text)';
  $('cell').value = String(i);
  drawGrad();
}
function restrip() {
  const f = D.features.values[st.strip];
  let mx = 0; for (const v of f) mx = Math.max(mx, v);
  for (let t = 0; t < N; t++) {
    const g = mx > 0 ? Math.trunc(255 - 200 * f[t] / mx) : 255;
    strips[t].style.background = 'rgb(' + g + ',' + Math.min(255, g + 30) + ',' + g + ')';
  }
  $('legend').textContent = 'Strip under each line: ' + D.features.titles[st.strip] + ' = ' +
    D.features.definitions[st.strip] + ' White: 0; darkest green: ' + mx + ', its largest ' +
    'value in the text.';
}
function hover(t) {
  st.hovered = t;
  const i = st.cell, ch = TEXT[t];
  const shown = ch === '\n' ? '\\n' : ch === '\t' ? '\\t' : ch;
  $('hover').textContent = '#' + t + " '" + shown + "' " + st.kind + '[' + i + '] = ' +
    value(t, i).toPrecision(4) + ' (' + D.features.titles[st.strip] + ' = ' +
    D.features.values[st.strip][t] + ')';
}
// ---- hypothesis selection (the formulas of rnnjax.apps.explore)
function parseRanges(txt) {
  // "40-49, 120-131" (or "40") -> [[40, 49], [120, 131]], each ordered and inside the text
  const out = [], re = /(\d+)\s*(?:-\s*(\d+))?/g;
  let m;
  while ((m = re.exec(txt)) !== null) {
    let a = parseInt(m[1], 10), b = m[2] === undefined ? a : parseInt(m[2], 10);
    if (b < a) { const x = a; a = b; b = x; }
    if (a < N) out.push([a, Math.min(b, N - 1)]);
  }
  return out;
}
function selectionScores(ranges, pad) {
  const h = H(), out = { score: [], inside: [], around: [] };
  const inside = new Uint8Array(N), around = new Uint8Array(N);
  for (const [a0, a1] of ranges) for (let t = a0; t <= a1; t++) inside[t] = 1;
  let nOut = 0;
  if (pad !== null) {
    for (const [a0, a1] of ranges) {
      for (let t = Math.max(0, a0 - pad); t < a0; t++) around[t] = 1;
      for (let t = a1 + 1; t < Math.min(N, a1 + 1 + pad); t++) around[t] = 1;
    }
    for (let t = 0; t < N; t++) { if (inside[t]) around[t] = 0; nOut += around[t]; }
  }
  if (nOut === 0) for (let t = 0; t < N; t++) { around[t] = inside[t] ? 0 : 1; nOut += around[t]; }
  const ins = [], aro = [];
  for (let t = 0; t < N; t++) { if (inside[t]) ins.push(t); else if (around[t]) aro.push(t); }
  // in whole bytes x = q - 128 the sums are exact integers, as in Python:
  // score = (S_in n_out - S_out n_in) / (sqrt(n_in n_out) sqrt(n SS - S^2))
  const nIn = ins.length, n = nIn + nOut, Q0 = Q[st.layer][st.kind], h0 = H();
  for (let i = 0; i < h; i++) {
    let si = 0, so = 0, ss = 0;
    for (const t of ins) { const x = Q0[t * h0 + i] - 128; si += x; ss += x * x; }
    for (const t of aro) { const x = Q0[t * h0 + i] - 128; so += x; ss += x * x; }
    const num = si * nOut - so * nIn, v = n * ss - (si + so) * (si + so);
    out.score.push(nOut > 0 && v > 0 ? num / (Math.sqrt(nIn * nOut) * Math.sqrt(v)) : 0);
    out.inside.push(si / nIn / 127); out.around.push(nOut > 0 ? so / nOut / 127 : 0);
  }
  return out;
}
function featureScores(name) {
  const f = D.features.values[name], h = H(), out = { score: [], inside: [], around: [] };
  let fm = 0; for (const v of f) fm += v; fm /= N;
  let ff = 0; for (const v of f) ff += (v - fm) * (v - fm);
  for (let i = 0; i < h; i++) {
    let am = 0; for (let t = 0; t < N; t++) am += norm(t, i); am /= N;
    let aa = 0, af = 0, si = 0, ni = 0, so = 0, no = 0;
    for (let t = 0; t < N; t++) {
      const a = norm(t, i), d = a - am; aa += d * d; af += d * (f[t] - fm);
      if (f[t] > fm) { si += a; ni++; } else { so += a; no++; }
    }
    out.score.push(af / (Math.sqrt(aa) * Math.sqrt(ff) + 1e-12));
    out.inside.push(ni ? si / ni : 0); out.around.push(no ? so / no : 0);
  }
  return out;
}
function rankOrder(sc, sign) {
  const idx = sc.score.map((_, i) => i);
  const key = i => sign === 'both' ? -Math.abs(sc.score[i]) : sign === 'on' ? -sc.score[i] :
    sc.score[i];
  idx.sort((x, y) => (key(x) - key(y)) || (x - y));
  return idx;
}
function showRanking(sc, what) {
  st.scores = sc; st.order = rankOrder(sc, $('sign').value);
  $('sel-info').textContent = what;
  const rows = st.order.slice(0, 15).map((i, r) =>
    '<tr data-cell="' + i + '"><td><input type="checkbox" class="mk" value="' + i + '"' +
    (r < 3 ? ' checked' : '') + '></td><td>' + (r + 1) + '</td><td><a class="show" data-cell="' +
    i + '">' + i + '</a></td><td>' + sc.score[i].toFixed(4) + '</td><td>' +
    sc.inside[i].toFixed(3) + '</td><td>' + sc.around[i].toFixed(3) + '</td></tr>');
  $('ranking').tBodies[0].innerHTML = rows.join('');
}
function rankRange() {
  const ranges = parseRanges($('ranges').value);
  const pv = parseInt($('pad').value, 10);
  const pad = pv >= 0 ? pv : null;  // empty: the rest of the text
  if (ranges.length === 0) return;
  $('ranges').value = ranges.map(r => r[0] + '-' + r[1]).join(', ');
  const first = ranges[0], sel = TEXT.slice(first[0], first[1] + 1).join('').replace(/\n/g, '\\n');
  const n = ranges.reduce((k, r) => k + r[1] - r[0] + 1, 0);
  showRanking(selectionScores(ranges, pad), ranges.length + ' range' +
    (ranges.length > 1 ? 's' : '') + ' (' + n + ' characters): [' + first[0] + ', ' + first[1] +
    '] "' + (sel.length > 60 ? sel.slice(0, 60) + '...' : sel) + '"' +
    (ranges.length > 1 ? ', ...' : '') + '; elsewhere: ' +
    (pad === null ? 'the rest of the text' : pad + ' characters either side') + ', ' +
    D.layers[st.layer].quantity[st.kind] + '; score = correlation with the selection');
}
function rankFeature() {
  const name = $('feature').value;
  showRanking(featureScores(name), 'feature ' + D.features.titles[name] +
    ': score = Pearson r over the text, ' + D.layers[st.layer].quantity[st.kind]);
}
function markMatches() {
  const cells = Array.from(document.querySelectorAll('.mk:checked')).map(e => +e.value);
  for (const s of spans) s.classList.remove('m');
  if (!st.scores || cells.length === 0) { $('match-info').textContent = ''; return; }
  let n = 0, runs = 0, prev = false; const sc = st.scores; st.matches = [];
  for (let t = 0; t < N; t++) {
    let ok = true;
    for (const i of cells) {
      const th = (sc.inside[i] + sc.around[i]) / 2, sg = sc.score[i] >= 0 ? 1 : -1;
      if (!(sg * (norm(t, i) - th) > 0)) { ok = false; break; }
    }
    if (ok) { spans[t].classList.add('m'); n++; if (!prev) { runs++; st.matches.push([t, t]); }
      st.matches[st.matches.length - 1][1] = t; }
    prev = ok;
  }
  $('match-info').textContent = n + ' of ' + N + ' characters (' + runs +
    ' runs) match cells [' + cells.join(', ') + ']; underlined in the text view.';
  $('match-info').dataset.count = String(n);
}
// ---- gradient flow
const G = D.grad;
let GN = null, GQ = null, SV = null;
function axes(svg, x0, x1, y0, y1, xl, yl, W, Hh) {
  const m = { l: 60, r: 10, t: 10, b: 34 };
  const X = x => m.l + (x - x0) / ((x1 - x0) || 1) * (W - m.l - m.r);
  const Y = y => Hh - m.b - (y - y0) / ((y1 - y0) || 1) * (Hh - m.t - m.b);
  let s = '<line x1="' + m.l + '" y1="' + (Hh - m.b) + '" x2="' + (W - m.r) + '" y2="' +
    (Hh - m.b) + '" stroke="#000"/><line x1="' + m.l + '" y1="' + m.t + '" x2="' + m.l +
    '" y2="' + (Hh - m.b) + '" stroke="#000"/>';
  for (let k = 0; k <= 4; k++) {
    const xv = x0 + (x1 - x0) * k / 4, yv = y0 + (y1 - y0) * k / 4;
    s += '<text x="' + X(xv) + '" y="' + (Hh - m.b + 12) + '" text-anchor="middle">' +
      (Math.abs(xv) >= 100 || Number.isInteger(xv) ? Math.round(xv) : xv.toFixed(1)) +
      '</text><text x="' + (m.l - 4) + '" y="' + (Y(yv) + 3) + '" text-anchor="end">' +
      yv.toFixed(2) + '</text>';
  }
  s += '<text x="' + (W / 2) + '" y="' + (Hh - 4) + '" text-anchor="middle">' + xl +
    '</text><text transform="translate(12,' + (Hh / 2) + ') rotate(-90)" text-anchor="middle">' +
    yl + '</text>';
  return { s, X, Y };
}
function drawGrad() {
  if (!G) return;
  const p = st.pos, t = G.positions[p], W1 = G.window + 1, first = G.first[p];
  const ks = [], ys = [], raw = [];
  for (let j = 0; j < W1; j++) {
    const v = GN[p * W1 + j]; if (!Number.isFinite(v)) break;
    ks.push(first + j); raw.push(v); ys.push(v > 0 ? Math.log10(v) : NaN);
  }
  const fin = ys.filter(Number.isFinite);
  // the picked cell's share, at the stored lags
  const cells = [];
  if (st.layer === G.layer) {
    const L = G.lags.length, h = D.layers[G.layer].H;
    G.lags.forEach((lag, j) => {
      const q = GQ[(p * L + j) * h + st.cell];
      if (q > 0) cells.push([t - lag, G.cell_top[p] - G.decades + q / 255 * G.decades]);
    });
  }
  const cy = cells.map(c => c[1]);
  let lo = Math.min(...fin, ...cy), hi = Math.max(...fin, ...cy);
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const a = axes($('g-lag'), first, t, lo, hi, 'character k (the text back from t = ' + t + ')',
    'log10 ||dL_t/ds_k||', 960, 260);
  let s = a.s, pts = '';
  ks.forEach((k, j) => {
    if (!Number.isFinite(ys[j])) return;
    pts += a.X(k) + ',' + a.Y(ys[j]) + ' ';
    s += '<circle class="gn" r="1.6" fill="#333" cx="' + a.X(k) + '" cy="' + a.Y(ys[j]) +
      '" data-k="' + k + '" data-v="' + raw[j] + '"/>';
  });
  s += '<polyline fill="none" stroke="#333" points="' + pts + '"/>';
  for (const [k, y] of cells) s += '<circle class="cg" r="3" fill="#e67e00" cx="' + a.X(k) +
    '" cy="' + a.Y(y) + '" data-k="' + k + '" data-log="' + y + '"/>';
  s += '<text x="70" y="22">black: ||dL_t/ds_k|| over the whole state s = ' +
    (D.layers[G.layer].kinds.length > 1 ? '[h; c]' : 'h') + '; orange: cell ' + st.cell +
    '\'s entries only' + (st.layer === G.layer ? '' : ' (pick a cell of ' +
    D.layers[G.layer].name + ')') + '</text>';
  $('g-lag').innerHTML = s;
  // the window's text, each character shaded by its log gradient norm
  let tx = '';
  ks.forEach((k, j) => {
    if (k < 0) return;
    const w = Number.isFinite(ys[j]) ? (ys[j] - lo) / ((hi - lo) || 1) : 0;
    const g = Math.trunc(255 - 175 * w), ch = TEXT[k];
    tx += '<span style="background:rgb(' + g + ',' + g + ',255)">' +
      (ch === '\n' ? '\u21b5' : esc(ch)) + '</span>';
  });
  $('g-text').innerHTML = tx;
  $('g-info').textContent = 't = ' + t + " ('" + TEXT[t].replace('\n', '\\n') + "' -> '" +
    TEXT[t + 1].replace('\n', '\\n') + "'): L_t = " + G.loss[p] + ' nats; the gradient ' +
    'falls by ' + (fin.length ? (fin[fin.length - 1] - fin[0]).toFixed(2) : '?') +
    ' decades over ' + (t - first) + ' characters; ||J_t||_2 = ' + G.spectral[p].toPrecision(4);
  for (const sp of spans) sp.classList.remove('pos');
  spans[t].classList.add('pos');
  // spectral norm per position
  const sx = G.positions, sy = G.spectral;
  const b = axes($('g-spec'), 0, N - 1, Math.min(...sy) * 0.95, Math.max(...sy) * 1.05,
    'position t (click a point to pick it)', '||ds_t/ds_(t-1)||_2', 960, 200);
  let s2 = b.s;
  sx.forEach((x, j) => s2 += '<circle class="sp" r="' + (j === p ? 5 : 3) + '" fill="' +
    (j === p ? '#c00' : '#06c') + '" cx="' + b.X(x) + '" cy="' + b.Y(sy[j]) + '" data-p="' + j +
    '" style="cursor:pointer"/>');
  $('g-spec').innerHTML = s2;
  // singular values at t
  const S = G.S, vals = Array.from(SV.slice(p * S, (p + 1) * S));
  const pos = vals.filter(v => v > 0), zeros = S - pos.length;
  const lv = pos.map(Math.log10), floor = Math.min(...lv) - 1;
  const c = axes($('g-sv'), 1, S, floor, Math.max(...lv), 'index i (descending)',
    'log10 sigma_i(J_t)', 960, 220);
  let s3 = c.s;
  vals.forEach((v, i) => {
    if (v > 0) s3 += '<circle class="sv" r="1.5" fill="#333" cx="' + c.X(i + 1) + '" cy="' +
      c.Y(Math.log10(v)) + '" data-v="' + v + '"/>';
    else s3 += '<text class="sv0" x="' + c.X(i + 1) + '" y="' + c.Y(floor) + '">x</text>';
  });
  $('g-sv').innerHTML = s3;
  $('sv-info').textContent = 'Singular values of the step Jacobian J_t = ds_t/ds_(t-1) at t = ' +
    t + ': ' + S + ' values, largest ' + vals[0].toPrecision(4) + ', ' + zeros +
    ' exactly zero (drawn as x at the bottom).';
}
// ---- wiring
function fillCells() {
  const L = D.layers[st.layer];
  $('cell').innerHTML = L.labels.map((l, i) => '<option value="' + i + '">' + l + '</option>')
    .join('');
  $('kind-c').disabled = L.kinds.indexOf('c') < 0;
  if (L.kinds.indexOf(st.kind) < 0) st.kind = L.kinds[0];
  $('kind-' + st.kind).checked = true;
  st.cell = Math.min(st.cell, L.H - 1);
}
function idx(node) {
  while (node && !(node.dataset && node.dataset.i !== undefined)) node = node.parentNode;
  return node ? parseInt(node.dataset.i, 10) : -1;
}
function init() {
  buildText();
  $('layer').innerHTML = D.layers.map((L, i) => '<option value="' + i + '">' + L.name +
    '</option>').join('');
  const fopts = D.features.names.map(n => '<option value="' + n + '">' + D.features.titles[n] +
    '</option>').join('');
  $('strip').innerHTML = fopts; $('feature').innerHTML = fopts;
  fillCells();
  $('layer').onchange = () => { st.layer = +$('layer').value; fillCells(); recolour(); };
  $('kind-c').onchange = $('kind-h').onchange = e => { st.kind = e.target.value; recolour(); };
  $('cell').onchange = () => { st.cell = +$('cell').value; recolour(); };
  $('prev').onclick = () => { st.cell = (st.cell + H() - 1) % H(); recolour(); };
  $('next').onclick = () => { st.cell = (st.cell + 1) % H(); recolour(); };
  $('strip').onchange = () => { st.strip = $('strip').value; restrip(); };
  $('text').addEventListener('mouseover', e => { const t = idx(e.target); if (t >= 0) hover(t); });
  $('text').addEventListener('mouseup', e => {
    const s = window.getSelection();
    if (!s || s.isCollapsed) return;
    // the selected characters: a boundary at the end of a character's text starts after
    // it, one at the start of a character's text ends before it
    const r = s.getRangeAt(0);
    let a = idx(r.startContainer), b = idx(r.endContainer);
    if (a < 0 || b < 0) return;
    if (r.startContainer.nodeType === 3 && r.startOffset >= r.startContainer.length) a += 1;
    if (r.endContainer.nodeType === 3 && r.endOffset === 0) b -= 1;
    if (b < a) return;
    const add = (e.ctrlKey || e.metaKey) && $('ranges').value.trim() !== '';
    $('ranges').value = (add ? $('ranges').value + ', ' : '') + a + '-' + b; rankRange();
  });
  $('rank').onclick = rankRange; $('rank-feature').onclick = rankFeature;
  $('sign').onchange = () => { if (st.scores) showRanking(st.scores, $('sel-info').textContent); };
  $('match').onclick = markMatches;
  $('select-matches').onclick = () => {
    markMatches();
    if (st.matches && st.matches.length) {
      $('ranges').value = st.matches.map(r => r[0] + '-' + r[1]).join(', '); rankRange(); }
  };
  $('clear-match').onclick = () => { for (const s of spans) s.classList.remove('m');
    $('match-info').textContent = ''; };
  $('ranking').addEventListener('click', e => {
    if (e.target.classList.contains('show')) { st.cell = +e.target.dataset.cell; recolour(); }
  });
  if (G) {
    GN = f32(G.norms); GQ = u8(G.cell_q); SV = f32(G.sv);
    $('gpos').innerHTML = G.positions.map((t, j) => '<option value="' + j + '">' + t + ': ' +
      esc(JSON.stringify(TEXT.slice(Math.max(0, t - 12), t + 1).join(''))) + '</option>').join('');
    $('gpos').onchange = () => { st.pos = +$('gpos').value; drawGrad(); };
    $('g-spec').addEventListener('click', e => {
      if (e.target.dataset && e.target.dataset.p !== undefined) {
        st.pos = +e.target.dataset.p; $('gpos').value = String(st.pos); drawGrad(); }
    });
    $('grad-note').textContent = 'L_t = -log p(next character | text up to t), the model\'s ' +
      'cross-entropy at character t; s_k = the state of ' + D.layers[G.layer].name +
      ' after character k (S = ' + G.S + ' numbers). ||dL_t/ds_k||_2 is computed by ' +
      'rnnjax.jacobian.gradient_norms_vs_lag, J_t = ds_t/ds_(t-1) by ' +
      'rnnjax.jacobian.step_jacobians, at export time, for ' + G.positions.length +
      ' positions (every ' + (G.positions.length > 1 ? G.positions[1] - G.positions[0] : '') +
      'th character), ' + G.window + ' characters back.';
  } else {
    $('p-grad').style.display = 'none';
  }
  recolour(); restrip();
  document.body.dataset.ready = '1';
}
init();
"""
