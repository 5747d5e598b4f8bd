"""What the paper reproductions share: the machine's description, Welch's t-test,
and the per-run record of a wall-clock-budgeted training loop."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence

import jax
import numpy as np
from scipy import stats


def machine() -> dict[str, object]:
  """The machine, as the other benchmark tables name it (no paths)."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  dev = jax.devices()[0]
  return dict(
    backend=jax.default_backend(),
    device=getattr(dev, "device_kind", str(dev)),
    cpu=cpu,
    cores=os.cpu_count(),
    jax=jax.__version__,
    python=platform.python_version(),
  )


def machine_line(m: dict[str, object]) -> str:
  return f"{m['cpu']} ({m['cores']} cores), backend {m['backend']}, jax {m['jax']}"


def summary(values: Sequence[float]) -> dict[str, object]:
  """Mean, sample standard deviation (ddof 1; 0 for one value), min, max and the values."""
  v = np.asarray(values, float)
  return dict(
    mean=float(v.mean()),
    std=float(v.std(ddof=1)) if v.size > 1 else 0.0,
    min=float(v.min()),
    max=float(v.max()),
    per_seed=[float(x) for x in v],
  )


def welch(a: Sequence[float], b: Sequence[float]) -> float | None:
  """Two-sided Welch's t-test p-value of ``mean(a) != mean(b)``; None when either
  sample has fewer than 2 values or both have zero variance."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  if a.size < 2 or b.size < 2 or (a.std() == 0 and b.std() == 0):
    return None
  p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
  return None if math.isnan(p) else p
