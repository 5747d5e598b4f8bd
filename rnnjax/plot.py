"""Matplotlib figures for reports (headless: the Agg backend)."""

from __future__ import annotations

import io as _io
from pathlib import Path

import numpy as np


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save(fig, path) -> Path:
  """Save ``fig`` as PNG atomically and close it."""
  from rnnjax.io import atomic_write_bytes
  buf = _io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  _plt().close(fig)
  return atomic_write_bytes(path, buf.getvalue())


def jacobian_figures(report: dict, out_dir) -> list[Path]:
  """Figures of a `rnnjax.jacobian.diagnose` report: per-step norms (with the
  lecture's bound for the vanilla RNN), log ‖∏J‖₂ and ‖∂L_T/∂s_k‖ by lag."""
  plt = _plt()
  out_dir = Path(out_dir)
  paths = []
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(report["step_spectral_norm"], label=r"$\|\partial h_t/\partial h_{t-1}\|_2$")
  if "lecture_bound" in report:
    ax.plot(report["lecture_bound"], "--", label=r"$\|\mathrm{diag} f'(z_t)\|\,\|W\|$")
  ax.axhline(1.0, color="gray", lw=0.8)
  ax.set_xlabel("step t"); ax.set_ylabel("norm"); ax.legend(); ax.set_title(report["cell"])
  paths.append(save(fig, out_dir / "step_norms.png"))

  fig, ax = plt.subplots(figsize=(6, 3.5))
  lags = np.arange(1, len(report["log_product_norm_by_lag"]) + 1)
  ax.plot(lags, np.asarray(report["log_product_norm_by_lag"]) / np.log(10), label=r"$\log_{10}\|\prod J\|_2$")
  g = np.asarray(report["grad_norm_by_lag"], float)
  with np.errstate(divide="ignore"):
    ax.plot(np.arange(len(g)), np.log10(g), label=r"$\log_{10}\|\partial L_T/\partial s_{T-\ell}\|$")
  ax.set_xlabel(r"lag $\ell$"); ax.legend()
  ax.set_title(f"verdict: {report['verdict']}")
  paths.append(save(fig, out_dir / "products_by_lag.png"))
  return paths


def loss_curve(history: list, path, key: str = "bpc", title: str = "") -> Path:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot([h["step"] for h in history], [h[key] for h in history])
  ax.set_xlabel("step"); ax.set_ylabel(key); ax.set_title(title)
  return save(fig, path)
