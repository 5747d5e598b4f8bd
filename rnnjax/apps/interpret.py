"""What a trained char model learned: cell activations over text, the cells
best correlated with simple features of source code (Karpathy, Johnson &
Fei-Fei 2015), and its character embeddings.

Features, one value per character:

* ``in_quotes``   1 inside a string literal (quotes included), else 0;
* ``in_brackets`` the nesting depth of (), [], {};
* ``indent``      the indentation (leading spaces) of the character's line;
* ``column``      the position in the line;
* ``in_comment``  1 from ``#`` (outside strings) to the end of the line.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.apps.io import StrPath

if TYPE_CHECKING:
  from matplotlib.colors import Colormap
  from matplotlib.figure import Figure

  from rnnjax.apps.data import Vocab
  from rnnjax.apps.models import CharLM, CharLMParams

FEATURES = ("in_quotes", "in_brackets", "indent", "column", "in_comment")

FEATURE_TITLES = {
  "in_quotes": "inside quotes",
  "in_brackets": "bracket depth",
  "indent": "indentation",
  "column": "column",
  "in_comment": "inside a comment",
}
"""The features' names in words."""

FEATURE_DEFINITIONS = {
  "in_quotes": "1 inside a string literal, its quotes included (' \" ''' or \"\"\"; a "
  "one-quote string ends at the end of its line), else 0.",
  "in_brackets": "the number of (, [ and { open at the character, outside strings and "
  "comments; a closing bracket counts at the depth it closes.",
  "indent": "the number of spaces that begin the character's line.",
  "column": "the character's position in its line, counted from 0.",
  "in_comment": "1 from a # outside strings to the end of its line, else 0.",
}
"""What each feature is, one sentence each (`text_features`)."""

COLOUR_NOTE = (
  "Each character's background is the cell's state after reading it: blue negative, "
  "white 0, red positive, scaled by the cell's largest |value| over the text."
)
"""How the pictures colour states (`html_page`, `cell_png`)."""


def r_note(n_chars: int, where: str = "on this page") -> str:
  """The sentence saying what ``r`` is, for ``r`` computed over ``n_chars``
  characters of text (``where``: how the reader finds that text)."""
  return (
    "r is the Pearson correlation between the cell's state and the feature, "
    f"over the {n_chars:,} characters of text {where}."
  )


def feature_note(name: str) -> str:
  """``"bracket depth = the number of (, [ and { open …"``: a feature defined in words."""
  return f"{FEATURE_TITLES[name]} = {FEATURE_DEFINITIONS[name]}"


def text_features(text: str) -> dict[str, np.ndarray]:
  """The features above for every character of ``text``: ``{name: [N] array}``."""
  n = len(text)
  f = {k: np.zeros(n, np.float32) for k in FEATURES}
  pos = 0
  for line in text.split("\n"):  # column and indentation, line by line
    end = pos + len(line) + 1
    f["column"][pos:end] = np.arange(end - pos)[: max(0, min(end, n) - pos)]
    f["indent"][pos:end] = len(line) - len(line.lstrip(" "))
    pos = end
  quote, comment, depth, i = None, False, 0, 0
  while i < n:
    ch = text[i]
    if quote is not None:  # inside a string literal
      if ch == "\\":
        step = 2
      elif text.startswith(quote, i):
        step = len(quote)
      else:
        step = 1
      f["in_quotes"][i : i + step] = 1
      f["in_brackets"][i : i + step] = depth
      if text.startswith(quote, i) and ch != "\\":
        quote = None
      elif ch == "\n" and len(quote) == 1:
        quote = None  # an unterminated one-line string
      i += step
      continue
    if comment:
      f["in_comment"][i] = ch != "\n"
      comment = ch != "\n"
    elif text.startswith(('"""', "'''"), i) or ch in "\"'":
      quote = text[i : i + 3] if text.startswith(('"""', "'''"), i) else ch
      f["in_quotes"][i : i + len(quote)] = 1
      f["in_brackets"][i : i + len(quote)] = depth
      i += len(quote)
      continue
    elif ch == "#":
      comment = True
      f["in_comment"][i] = 1
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      f["in_brackets"][i] = depth
      depth = max(depth - 1, 0)
      i += 1
      continue
    f["in_brackets"][i] = depth
    i += 1
  return f


def layer_trace(
  model: CharLM, params: CharLMParams, vocab: Vocab, text: str
) -> tuple[list[Any], list[np.ndarray]]:
  """Every layer's carry after each character, and each layer's inputs.

  Args:
    model: a char model (`rnnjax.apps.models.char_lm`) of plain stacked cells.
    params: its params.
    vocab: its vocabulary.
    text: the text to read, from the zero state.

  Returns:
    ``(carries, inputs)``: per layer, the carry after reading each character
    (leaves ``[N, ...]``, e.g. an LSTM's ``h`` and ``c`` as ``[N, H]``), and
    the layer's input at each character (``[N, E]`` for the first, the layer
    below's output ``[N, H]`` above it).

  Raises:
    ValueError: ``text`` is empty.
  """
  if not text:
    raise ValueError("layer_trace: text is empty; pass at least one character")
  ids = jnp.asarray(vocab.encode(text))
  x = params.embed.table[ids]  # [N, E]
  cells = model.cells

  @jax.jit
  def run(params: CharLMParams, x: jax.Array) -> Any:
    def body(carries: Any, x_t: jax.Array) -> tuple[Any, Any]:
      ins, y = [], x_t
      new = []
      for cell, p, c in zip(cells, params.rnn, carries, strict=True):
        ins.append(y)
        c, y = cell.step(p, c, y)
        new.append(c)
      return new, (new, ins)

    _, out = jax.lax.scan(body, [c.initial_carry(()) for c in cells], x)
    return out

  carries, inputs = run(params, x)
  return carries, [np.asarray(i) for i in inputs]


def char_states(
  model: CharLM, params: CharLMParams, vocab: Vocab, text: str, layer: int = 0
) -> np.ndarray:
  """Per-character states of one layer: the LSTM's cell state ``c`` (as
  in Karpathy et al.), else the hidden state ``h``: ``[N, H]``."""
  states = layer_trace(model, params, vocab, text)[0][layer]
  return np.asarray(states.c if hasattr(states, "c") else states)


def state_name(model: CharLM, layer: int = 0) -> str:
  """What `char_states` returns, in words: ``"LSTM cell state c"`` or ``"hidden state h"``."""
  carry = model.cells[layer].initial_carry(())
  return "LSTM cell state c" if hasattr(carry, "c") else "hidden state h"


def best_cells(
  states: np.ndarray, features: dict[str, np.ndarray], top: int = 1
) -> dict[str, list[dict[str, Any]]]:
  """For each feature, the cells whose activation correlates best (|Pearson r|)."""
  s = states - states.mean(0)
  s_norm = np.sqrt((s**2).sum(0)) + 1e-12
  out = {}
  for name, v in features.items():
    v = v - v.mean()
    if not np.any(v):
      continue
    r = (s * v[:, None]).sum(0) / (s_norm * (np.sqrt((v**2).sum()) + 1e-12))
    order = np.argsort(-np.abs(r))[:top]
    out[name] = [dict(cell=int(k), r=float(r[k])) for k in order]
  return out


def _color(a: float) -> str:
  """Blue (negative) to white to red (positive), for a in [-1, 1]."""
  a = float(np.clip(a, -1, 1))
  if a >= 0:
    return f"rgb(255,{int(255 * (1 - a))},{int(255 * (1 - a))})"
  return f"rgb({int(255 * (1 + a))},{int(255 * (1 + a))},255)"


def _scale(activations: np.ndarray) -> float:
  """The colour scale: the largest |activation| (1 for an all-zero cell)."""
  m = float(np.abs(activations).max()) if activations.size else 0.0
  return m if m > 0 else 1.0


_LEGEND_CSS = (
  ".legend{display:inline-block;width:240px;height:12px;vertical-align:middle;"
  "border:1px solid #888;background:linear-gradient(to right,rgb(0,0,255),"
  "rgb(255,255,255),rgb(255,0,0))}"
)


def _legend(scale: float, quantity: str = "state") -> str:
  """An HTML colour bar from −scale (blue) through 0 (white) to +scale (red)."""
  return (
    f"<p class='scale'>{html.escape(quantity)} {-scale:+.3g} <span class='legend'></span> "
    f"{scale:+.3g} (blue negative, white 0, red positive)</p>"
  )


def html_page(
  text: str,
  states: np.ndarray,
  cells: dict[str, int],
  title: str = "rnnjax cells",
  explain_r: bool = True,
  quantity: str = "state",
) -> str:
  """A static HTML page (no JavaScript) with one block per (label, cell): each
  character coloured by the cell's ``quantity`` (scaled by its largest
  magnitude), with a colour bar per cell. The page says how the colours read,
  defines the features and, with ``explain_r``, says that the ``r`` of the
  labels is the Pearson correlation over ``text``. `rnnjax.apps.explore`
  writes the interactive page with every cell."""
  notes = [COLOUR_NOTE] + ([r_note(len(text))] if explain_r else [])
  parts = [
    f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
    "<style>pre{font:13px monospace;line-height:1.35;white-space:pre-wrap}"
    "span{border-radius:2px}" + _LEGEND_CSS + "</style>",
    f"<h1>{html.escape(title)}</h1>",
    "<p class='note'>" + html.escape(" ".join(notes)) + "</p>",
    "<p class='note'>The features: "
    + "; ".join(html.escape(feature_note(k)) for k in FEATURES)
    + f"</p><p class='note'>This page shows {len(cells)} of the {states.shape[1]} cells; "
    "<code>rnnjax explore</code> writes a page with every cell.</p>",
  ]
  for label, k in cells.items():
    scale = _scale(states[:, k])
    a = states[:, k] / scale
    spans = "".join(
      f"<span style='background:{_color(v)}'>{html.escape(ch)}</span>"
      for ch, v in zip(text, a, strict=False)
    )
    parts.append(
      f"<h2>{html.escape(label)}: cell {k}</h2>{_legend(scale, quantity)}<pre>{spans}</pre>"
    )
  return "\n".join(parts)


def colormap() -> Colormap:
  """The colours of `html_page` for matplotlib: blue at 0, white at ½, red at 1."""
  from matplotlib.colors import LinearSegmentedColormap

  return LinearSegmentedColormap.from_list("rnnjax_cells", [(0, 0, 1), (1, 1, 1), (1, 0, 0)])


def varied_window(text: str, values: np.ndarray, lines: int = 30) -> int:
  """The first line of the ``lines`` consecutive lines of ``text`` over which
  ``values`` (one per character) vary most (largest standard deviation): where
  a picture of a cell or a feature shows something.

  Examples:
    >>> import numpy as np
    >>> text = "a\\nb\\nc\\nd\\n"
    >>> varied_window(text, np.array([0, 0, 0, 0, 1, 0, 0, 0], float), lines=2)
    1
  """
  v = np.asarray(values, np.float64)
  starts = [0]
  for line in text.split("\n")[:-1]:
    starts.append(starts[-1] + len(line) + 1)
  n_lines = len(starts)
  if n_lines <= lines:
    return 0
  c1 = np.concatenate([[0.0], np.cumsum(v)])
  c2 = np.concatenate([[0.0], np.cumsum(v * v)])
  bounds = [*starts, len(v)]
  best, best_sd = 0, -1.0
  for first in range(n_lines - lines + 1):
    a, b = bounds[first], min(bounds[first + lines], len(v))
    if b <= a:
      continue
    m = (c1[b] - c1[a]) / (b - a)
    sd = max((c2[b] - c2[a]) / (b - a) - m * m, 0.0)
    if sd > best_sd + 1e-12:
      best, best_sd = first, sd
  return best


def cell_figure(
  text: str,
  activations: np.ndarray,
  title: str = "",
  cols: int = 100,
  max_lines: int = 30,
  note: str = "",
  *,
  feature: np.ndarray | None = None,
  feature_name: str = "",
  first_line: int = 0,
  quantity: str = "state",
) -> Figure:
  """The text on a character grid from line ``first_line``, each character's
  background coloured by the cell's ``quantity`` (blue negative, white 0, red
  positive, scaled by the largest |value| over the whole text), with a colour
  bar naming the quantity; with ``feature`` (one value per character), a strip
  under each line shading it (white 0, dark green its largest value), and the
  feature defined under the bar; ``note`` is printed under it too."""
  from matplotlib.cm import ScalarMappable
  from matplotlib.colors import Normalize

  from rnnjax.apps import plot

  plt = plot.pyplot()
  all_lines = text.split("\n")
  lines = all_lines[first_line : first_line + max_lines]
  pos = sum(len(line) + 1 for line in all_lines[:first_line])
  scale = _scale(activations)
  norm, cmap = Normalize(-scale, scale), colormap()
  strip = feature is not None
  fvals = np.zeros(len(activations)) if feature is None else np.asarray(feature, np.float64)
  pitch = 1.45 if strip else 1.0
  fmax = float(fvals.max()) if len(fvals) and fvals.max() > 0 else 1.0
  fig, ax = plt.subplots(figsize=(cols * 0.09, len(lines) * 0.2 * pitch + 1.4))
  ax.set_xlim(0, cols)
  ax.set_ylim(len(lines) * pitch, 0)
  ax.axis("off")
  for row, line in enumerate(lines):
    y = row * pitch
    for x, ch in enumerate(line[:cols]):
      ax.add_patch(plt.Rectangle((x, y), 1, 1, color=cmap(norm(activations[pos + x]))))
      ax.text(x + 0.5, y + 0.55, ch, ha="center", va="center", family="monospace", fontsize=7)
      if strip:
        g = 1 - 0.8 * float(fvals[pos + x]) / fmax
        ax.add_patch(plt.Rectangle((x, y + 1.05), 1, 0.3, color=(g, min(1.0, g + 0.12), g)))
    pos += len(line) + 1
  ax.set_title(title, fontsize=9, loc="left")
  bar = fig.colorbar(
    ScalarMappable(norm, cmap),
    ax=ax,
    orientation="horizontal",
    fraction=0.05,
    pad=0.02,
    aspect=60,
    ticks=[-scale, 0, scale],
  )
  total = text.count("\n") + 1
  part = len(lines) < total or any(len(line) > cols for line in lines)
  shown = f"The picture shows lines {first_line + 1}-{first_line + len(lines)} of {total}."
  strip_note = (
    f"Strip under each line: {feature_note(feature_name) if feature_name else 'the feature'} "
    f"White 0, darkest green {fmax:g}."
    if strip
    else ""
  )
  caption = " ".join(filter(None, [strip_note, note, shown if part else ""]))
  label = (
    f"{quantity}: blue negative, white 0, red positive (scale: the largest |value| over the text)"
  )
  bar.set_label("\n".join([label, *textwrap.wrap(caption, int(cols * 1.25))]), fontsize=8)
  bar.ax.tick_params(labelsize=7)
  return fig


def cell_png(
  text: str,
  activations: np.ndarray,
  path: StrPath,
  title: str = "",
  cols: int = 100,
  max_lines: int = 30,
  note: str = "",
  **kw: Any,
) -> Path:
  """`cell_figure`, saved as PNG to ``path`` (``kw``: its keyword-only options)."""
  from rnnjax.apps import plot

  return plot.save(cell_figure(text, activations, title, cols, max_lines, note, **kw), path)


def write_static(
  text: str,
  states: np.ndarray,
  out_dir: StrPath,
  quantity: str = "state",
  *,
  cell: int | None = None,
  top: int = 1,
  png_names: str = "cell",
) -> dict[str, list[dict[str, Any]]]:
  """The static pictures: visualize.html, features.json and one PNG per shown cell.

  Without ``cell``, the best-correlated cell of each feature is shown, its PNG
  drawn over the 30 lines where that feature varies most, with the feature as
  a strip; with ``cell``, that cell, over the lines where it varies most.

  Args:
    text: the text.
    states: ``[N, H]`` states.
    out_dir: the folder to write to.
    quantity: what ``states`` are, for the colour bars (e.g. ``"LSTM cell state c"``).
    cell: show this cell only.
    top: how many cells per feature features.json lists.
    png_names: ``"cell"`` (``cell_{k}.png``) or ``"feature"`` (``cell_{feature}.png``).

  Returns:
    `best_cells`' result.
  """
  from rnnjax.apps import io

  out_dir = Path(out_dir)
  features = text_features(text)
  best = best_cells(states, features, top=top)
  shown: dict[str, tuple[int, str | None]]
  if cell is not None:
    shown = {"chosen with --cell": (cell, None)}
  else:
    shown = {f"{k} (r = {v[0]['r']:+.2f})": (v[0]["cell"], k) for k, v in best.items()}
  page = html_page(
    text, states, {k: c for k, (c, _) in shown.items()}, explain_r=cell is None, quantity=quantity
  )
  io.atomic_write_text(out_dir / "visualize.html", page)
  io.write_json(out_dir / "features.json", best)
  note = "" if cell is not None else r_note(len(text), "analysed")
  for label, (k, name) in shown.items():
    kw: dict[str, Any] = dict(quantity=quantity)
    if name is not None:
      kw.update(
        feature=features[name],
        feature_name=name,
        first_line=varied_window(text, features[name]),
      )
      title = f"cell {k}: best for {FEATURE_TITLES[name]} ({name}), r = {best[name][0]['r']:+.2f}"
    else:
      kw.update(first_line=varied_window(text, states[:, k]))
      title = f"cell {k}: {label}"
    file = f"cell_{name if png_names == 'feature' and name else k}.png"
    cell_png(text, states[:, k], out_dir / file, title, note=note, **kw)
  return best


# ----------------------------------------------------------------- embeddings


def _unit(table: np.ndarray) -> np.ndarray:
  return table / (np.linalg.norm(table, axis=1, keepdims=True) + 1e-12)


def nearest(table: Any, vocab: Vocab, token: str, k: int = 5) -> list[tuple[str, float]]:
  """The ``k`` nearest characters to ``token`` by cosine similarity."""
  if token not in vocab.chars:
    raise ValueError(f"nearest: {token!r} is not in the vocabulary")
  u = _unit(np.asarray(table))
  i = vocab.chars.index(token)
  sims = u @ u[i]
  order = [j for j in np.argsort(-sims) if j != i][:k]
  return [(vocab.chars[j], float(sims[j])) for j in order]


def analogy(
  table: Any, vocab: Vocab, a: str, b: str, c: str, k: int = 3
) -> list[tuple[str, float]]:
  """``a − b + c``: the characters nearest to that vector (inputs excluded)."""
  for t in (a, b, c):
    if t not in vocab.chars:
      raise ValueError(f"analogy: {t!r} is not in the vocabulary")
  u = _unit(np.asarray(table))
  idx = {t: vocab.chars.index(t) for t in (a, b, c)}
  v = u[idx[a]] - u[idx[b]] + u[idx[c]]
  sims = u @ (v / (np.linalg.norm(v) + 1e-12))
  order = [j for j in np.argsort(-sims) if j not in idx.values()][:k]
  return [(vocab.chars[j], float(sims[j])) for j in order]


def pca_2d(table: Any) -> np.ndarray:
  """The rows of ``table`` projected on its first two principal components."""
  x = np.asarray(table, np.float64)
  x = x - x.mean(0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  return x @ vt[:2].T


def embedding_png(
  table: Any, vocab: Vocab, path: StrPath, title: str = "character embeddings (PCA)"
) -> Path:
  """The embeddings projected on their first two principal components, each
  character drawn at its point (digits red, letters blue, brackets green)."""
  from rnnjax.apps import plot

  plt = plot.pyplot()
  xy = pca_2d(table)
  fig, ax = plt.subplots(figsize=(7, 6))
  groups: list[tuple[str, Callable[[str], bool], str]] = [
    ("digits", str.isdigit, "tab:red"),
    ("letters", str.isalpha, "tab:blue"),
    ("brackets", lambda c: c in "()[]{}", "tab:green"),
  ]
  for ch, (x, y) in zip(vocab.chars, xy, strict=True):
    color = next((col for _, test, col in groups if test(ch)), "gray")
    label = {"\n": "\\n", " ": "␣", "\t": "\\t"}.get(ch, ch)
    ax.text(x, y, label, color=color, fontsize=8, ha="center", va="center")
  ax.set_xlim(xy[:, 0].min() - 0.5, xy[:, 0].max() + 0.5)
  ax.set_ylim(xy[:, 1].min() - 0.5, xy[:, 1].max() + 0.5)
  ax.set_title(title + ": red digits, blue letters, green brackets")
  return plot.save(fig, path)


def cluster_score(table: Any, vocab: Vocab, group: str) -> float:
  """Mean cosine similarity within ``group`` minus mean similarity to the rest."""
  u = _unit(np.asarray(table))
  inside = [vocab.chars.index(c) for c in group if c in vocab.chars]
  rest = [i for i in range(len(vocab.chars)) if i not in inside and i != 0]
  if len(inside) < 2 or not rest:
    return float("nan")  # the vocabulary lacks the group
  s = u @ u.T
  within = s[np.ix_(inside, inside)][~np.eye(len(inside), dtype=bool)].mean()
  return float(within - s[np.ix_(inside, rest)].mean())
