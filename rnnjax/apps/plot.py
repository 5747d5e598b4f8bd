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


def step_norms_figure(report: dict[str, Any]) -> Figure:
  """Per-step spectral norms of a `rnnjax.jacobian.diagnose` report, with the
  lecture's bound for the vanilla RNN."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(report["step_spectral_norm"], label=r"$\|\partial h_t/\partial h_{t-1}\|_2$")
  if "lecture_bound" in report:
    ax.plot(report["lecture_bound"], "--", label=r"$\|\mathrm{diag} f'(z_t)\|\,\|W\|$")
  ax.axhline(1.0, color="gray", lw=0.8)
  ax.set_xlabel("step t")
  ax.set_ylabel("spectral norm")
  ax.legend()
  ax.set_title(report["cell"], fontsize=10)
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
  ax.set_xlabel(r"lag $\ell$")
  ax.set_ylabel(r"$\log_{10}$ norm")
  ax.legend(fontsize=8)
  ax.set_title(f"{report['cell']}: verdict {report['verdict']}", fontsize=10)
  return fig


def jacobian_figures(report: dict[str, Any], out_dir: StrPath) -> list[Path]:
  """Figures of a `rnnjax.jacobian.diagnose` report, written to ``out_dir``:
  step_norms.png (`step_norms_figure`) and products_by_lag.png (`products_figure`)."""
  out_dir = Path(out_dir)
  return [
    save(step_norms_figure(report), out_dir / "step_norms.png"),
    save(products_figure(report), out_dir / "products_by_lag.png"),
  ]


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
