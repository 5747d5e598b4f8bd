"""Matplotlib figures for reports (headless: the Agg backend)."""

from __future__ import annotations

import io as _io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnjax.apps.io import StrPath

if TYPE_CHECKING:
  from matplotlib.figure import Figure


def pyplot() -> Any:
  """``matplotlib.pyplot`` on the headless Agg backend, imported on first use."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save(fig: Figure, path: StrPath) -> Path:
  """Save ``fig`` as PNG atomically and close it."""
  from rnnjax.apps.io import atomic_write_bytes

  buf = _io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  pyplot().close(fig)
  return atomic_write_bytes(path, buf.getvalue())


def state_label(report: dict[str, Any]) -> str:
  """What ``s_t`` is in a `rnnjax.jacobian.diagnose` report, for captions.

  The diagnosis differentiates the cell's whole state, not only ``h``: for an
  LSTM ``s_t = [h_t; c_t]`` of size ``S = 2H``.

  Examples:
    >>> state_label(dict(cell="rnnjax.lstm(256)", state_size=512))
    's_t = [h_t; c_t], S = 2H = 512'
    >>> state_label(dict(cell="rnnjax.elman(8, activation='tanh')", state_size=8))
    's_t = h_t, S = H = 8'
  """
  S, cell = report.get("state_size"), str(report.get("cell", ""))
  if S is None:
    return "s_t: the cell's state"
  if "lstm" in cell.lower() and "hmlstm" not in cell.lower() and S % 2 == 0:
    return f"s_t = [h_t; c_t], S = 2H = {S}"
  if "hmlstm" in cell.lower():
    return f"s_t: every level's state, S = {S}"
  return f"s_t = h_t, S = H = {S}"


def step_norms_figure(report: dict[str, Any]) -> Figure:
  """Per-step spectral norms ``‖∂s_t/∂s_{t−1}‖₂`` of a `rnnjax.jacobian.diagnose`
  report (the Jacobian of the whole state, `state_label`), with the lecture's
  bound for the vanilla RNN."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 3.6))
  what = state_label(report)
  ax.plot(report["step_spectral_norm"], label=r"$\|\partial s_t/\partial s_{t-1}\|_2$")
  if "lecture_bound" in report:
    ax.plot(report["lecture_bound"], "--", label=r"$\|\mathrm{diag} f'(z_t)\|\,\|W\|$")
  ax.axhline(1.0, color="gray", lw=0.8, label="1 (a step neither stretches nor shrinks)")
  ax.set_xlabel("step t")
  ax.set_ylabel(r"spectral norm of the $S \times S$ step Jacobian")
  ax.legend(fontsize=8)
  ax.set_title(f"{report['cell']}\n{what}", fontsize=9)
  return fig


UNDERFLOW_NEAR = 1e-15
"""A gradient norm that is 0 after a positive one below this has underflowed:
every entry of the gradient left the float range (below float32's smallest
number, about 1e-45, or float64's, about 5e-324)."""


def first_zero_lag(grad_norm_by_lag: Any) -> int | None:
  """The first lag at which a gradient norm is exactly 0, or None."""
  zeros = np.flatnonzero(np.asarray(grad_norm_by_lag, float) == 0)
  return int(zeros[0]) if zeros.size else None


def zero_gradient_note(grad_norm_by_lag: Any) -> str | None:
  """Why the log-scale gradient curve stops, or None when no norm is 0: it
  underflowed (the norm before it was below `UNDERFLOW_NEAR`), or it is
  exactly 0 (no gradient reaches those states)."""
  g = np.asarray(grad_norm_by_lag, float)
  lag = first_zero_lag(g)
  if lag is None:
    return None
  if lag > 0 and 0 < g[lag - 1] < UNDERFLOW_NEAR:
    return (
      f"the gradient norm computes to 0 from lag {lag} (last value {g[lag - 1]:.1e}): "
      "its entries underflow the float range"
    )
  return f"the gradient norm is exactly 0 from lag {lag}: no gradient reaches those states"


def products_figure(report: dict[str, Any]) -> Figure:
  """``log10 ‖J_T ⋯ J_{T-ℓ+1}‖₂`` and ``log10 ‖∂L_T/∂s_{T-ℓ}‖`` by lag ``ℓ``.

  A gradient norm that computes to exactly 0 has no logarithm: the curve stops
  there, and a dotted line with a legend entry (`zero_gradient_note`) marks
  the lag and says why. In float32 the diagnosis' gradients underflow near
  1e-38 (see `UNDERFLOW_NEAR`); the product norms, carried in log space, go on.
  """
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 3.8))
  logprod = np.asarray(report["log_product_norm_by_lag"], float) / np.log(10)
  ax.plot(
    np.arange(1, len(logprod) + 1),
    logprod,
    label=r"$\log_{10}\|J_T \cdots J_{T-\ell+1}\|_2$",
  )
  g = np.asarray(report["grad_norm_by_lag"], float)
  drawn = np.full(g.shape, np.nan)
  np.log10(g, out=drawn, where=g > 0)
  ax.plot(np.arange(len(g)), drawn, label=r"$\log_{10}\|\partial L_T/\partial s_{T-\ell}\|$")
  zero, note = first_zero_lag(g), zero_gradient_note(g)
  if zero is not None and note is not None:
    ax.axvline(
      zero,
      color="tab:red",
      ls=":",
      lw=1.2,
      label="\n".join(textwrap.wrap(note + "; log10 0 = −∞ is not drawn", 52)),
    )
  ev = report.get("evidence")
  if ev is not None and len(logprod) > 1:
    # the verdict's evidence: the slope of log ‖∏J‖₂ between lags T/2 and T
    # (`rnnjax.jacobian.diagnose`), drawn over the lags it is taken from
    T = len(logprod)
    half, rate = T // 2, ev["log_product_norm_per_step"]
    ax.axvspan(half, T, color="tab:orange", alpha=0.12, lw=0)
    ax.plot(
      [half, T],
      [logprod[half - 1], logprod[-1]],
      color="k",
      lw=2,
      ls="--",
      label=f"slope over lags {half}–{T}: {rate:+.4f} per step (ln),"
      f"\n{verdict_rule(rate, ev['lyapunov_max'], ev['tol'])}",
    )
  ax.set_xlabel(r"lag $\ell$ (steps back from the last, T)")
  ax.set_ylabel(r"$\log_{10}$ norm")
  ax.legend(fontsize=7.5)
  title = f"{report['cell']}: verdict {report['verdict']}"
  if ev is not None:
    title += (
      "\n$L_T$: a loss on the last state only, "
      r"$\partial L_T/\partial s_T$ = 1/√H on h, 0 on the rest; " + state_label(report)
    )
  ax.set_title(title, fontsize=10 if ev is None else 8.5)
  return fig


def verdict_rule(rate: float, lam1: float, tol: float) -> str:
  """The rule of `rnnjax.jacobian.diagnose` that gave its verdict, in words.

  Examples:
    >>> print(verdict_rule(-0.0137, -0.0064, 0.01))
    slope < −tol = −0.01: vanishing (whatever the norm's level)
  """
  if lam1 > tol:
    return f"λ₁ = {lam1:+.4f} > tol = {tol}: exploding"
  if rate > tol:
    return f"slope > tol = {tol}: exploding"
  if rate < -tol:
    return f"slope < −tol = −{tol}: vanishing (whatever the norm's level)"
  return f"|slope| ≤ tol = {tol} and λ₁ ≤ tol: stable"


def jacobian_figures(report: dict[str, Any], out_dir: StrPath) -> list[Path]:
  """Figures of a `rnnjax.jacobian.diagnose` report, written to ``out_dir``:
  step_norms.png (`step_norms_figure`) and products_by_lag.png (`products_figure`)."""
  out_dir = Path(out_dir)
  return [
    save(step_norms_figure(report), out_dir / "step_norms.png"),
    save(products_figure(report), out_dir / "products_by_lag.png"),
  ]


EMBEDDING_GROUPS: tuple[tuple[str, str], ...] = (
  ("digits", "tab:red"),
  ("letters", "tab:blue"),
  ("brackets ()[]{}", "tab:green"),
  ("other: whitespace, punctuation, operators, symbols", "gray"),
)
"""The classes `embedding_figure` colours, in its legend's order."""


def embedding_group(ch: str) -> int:
  """The index in `EMBEDDING_GROUPS` of a character's class.

  Examples:
    >>> [EMBEDDING_GROUPS[embedding_group(c)][0].split()[0] for c in "7a(,"]
    ['digits', 'letters', 'brackets', 'other:']
  """
  if ch.isdigit():
    return 0
  if ch.isalpha():
    return 1
  if ch in "()[]{}":
    return 2
  return 3


def embedding_figure(table: Any, chars: Any, title: str = "character embeddings") -> Figure:
  """Each character drawn at its embedding's projection on the first two
  principal components; the axes name the components and the share of the
  variance each explains, the legend names the classes (`EMBEDDING_GROUPS`)."""
  plt = pyplot()
  x = np.asarray(table, np.float64)
  x = x - x.mean(0)
  _, sv, vt = np.linalg.svd(x, full_matrices=False)
  xy = x @ vt[:2].T
  share = sv**2 / max(float(np.sum(sv**2)), 1e-300)
  fig, ax = plt.subplots(figsize=(7, 6))
  for ch, (px, py) in zip(chars, xy, strict=True):
    label = {"\n": "\\n", " ": "␣", "\t": "\\t"}.get(ch, ch)
    color = EMBEDDING_GROUPS[embedding_group(ch)][1]
    ax.text(px, py, label, color=color, fontsize=8, ha="center", va="center")
  ax.set_xlim(xy[:, 0].min() - 0.5, xy[:, 0].max() + 0.5)
  ax.set_ylim(xy[:, 1].min() - 0.5, xy[:, 1].max() + 0.5)
  ax.set_xlabel(f"principal component 1 ({100 * share[0]:.0f}% of the variance)")
  ax.set_ylabel(f"principal component 2 ({100 * share[1]:.0f}% of the variance)")
  counts = np.bincount([embedding_group(c) for c in chars], minlength=len(EMBEDDING_GROUPS))
  for (name, color), n in zip(EMBEDDING_GROUPS, counts, strict=True):
    ax.scatter([], [], color=color, marker="s", label=f"{name} ({n})")
  ax.legend(fontsize=8, loc="best")
  ax.set_title(f"{title}: {len(chars)} characters, PCA of the embedding table", fontsize=10)
  return fig


def loss_figure(
  history: list[dict[str, Any]],
  key: str = "bpc",
  title: str = "",
  baseline: float | None = None,
  baseline_label: str = "baseline",
) -> Figure:
  """``history[i][key]`` against ``history[i]["step"]``; with ``baseline``, a
  dashed horizontal line at that value, labelled ``baseline_label`` and the value."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot([h["step"] for h in history], [h[key] for h in history], label=f"training {key}")
  if baseline is not None:
    ax.axhline(baseline, color="gray", ls="--", lw=1, label=f"{baseline_label} = {baseline:.3f}")
    ax.legend()
  ax.set_xlabel("step")
  ax.set_ylabel(key)
  ax.set_title(title)
  return fig


def loss_curve(
  history: list[dict[str, Any]],
  path: StrPath,
  key: str = "bpc",
  title: str = "",
  baseline: float | None = None,
  baseline_label: str = "baseline",
) -> Path:
  """`loss_figure`, saved as PNG to ``path``."""
  return save(loss_figure(history, key, title, baseline, baseline_label), path)
