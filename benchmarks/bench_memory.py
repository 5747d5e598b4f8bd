"""Memory of each backward mode of `rj.scan` against the sequence length T.

XLA's compiled temporary memory (``memory_analysis().temp_size_in_bytes``: the
program is compiled, never run) of the gradient of ``sum(ys²)`` with respect to
the params and the inputs, for ``backward="autodiff"``, ``"bptt"`` and
``"checkpoint"``, at B = 16, I = H = 256 (the long-sequence shape of
``bench_kernels.py``) and T from 100 to 10,000.

    python benchmarks/bench_memory.py        # about a minute on 2 CPU cores

Writes ``benchmarks/results/memory_cpu.json``; ``benchmarks/tables.py`` renders
its table and chart.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnjax as rj
from rnnjax.apps.io import write_json

B, I, H = 16, 256, 256
TS = (100, 300, 1000, 3000, 10_000)
MODES = ("autodiff", "bptt", "checkpoint")
CELLS = {"lstm": rj.lstm, "gru": lambda h: rj.gru(h, reset="after"), "elman": rj.elman}


def temp_mib(cell, params, T, mode):
  """MiB of XLA temporaries of the gradient, compiled for [T, B, I] float32 inputs."""
  xs = jax.ShapeDtypeStruct((T, B, I), jnp.float32)

  def loss(p, x):
    return jnp.sum(rj.scan(cell, p, x, backward=mode)[1] ** 2)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def main():
  rows = []
  for name, make in CELLS.items():
    cell = make(H)
    params = cell.init(jax.random.key(0), I)
    for T in TS:
      row = dict(cell=name, T=T, B=B, I=I, H=H)
      row.update({f"{m}_mib": round(temp_mib(cell, params, T, m), 2) for m in MODES})
      rows.append(row)
      print(row, flush=True)
  machine = dict(
    backend=jax.default_backend(), jax=jax.__version__, python=platform.python_version()
  )
  out = Path(__file__).parent / "results" / "memory_cpu.json"
  write_json(out, dict(machine=machine, rows=rows))
  print(f"wrote {out.name}")


if __name__ == "__main__":
  main()
