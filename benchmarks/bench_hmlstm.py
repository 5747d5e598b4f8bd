"""What does the HM-LSTM cost per token? Against an LSTM of the same total hidden size.

Times forward+backward (grad of sum(ys²) w.r.t. params and xs, rj.scan's hand-written
BPTT) of `rj.hmlstm` with L levels of H units against `rj.lstm(L·H)`, on the same
inputs, in one process, medians after a warm-up. The HM-LSTM runs three ways: as
initialised, with every boundary forced on (every level above the first reads every
step: UPDATE or FLUSH) and with every boundary forced off (every level above the
first COPYs every step, which `lax.cond` turns into no work). Writes JSON and a
markdown table to ``--out`` (default ``benchmarks/results``).

    python benchmarks/bench_hmlstm.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import _time as kernel_time  # one timer for every table
from bench_kernels import machine  # the same machine description as the kernel tables

import rnnjax as rj
from rnnjax.apps import io

SHAPES = {  # name: (B, T, I, H per level, levels)
  "2 levels": (32, 100, 64, 128, 2),
  "3 levels": (32, 100, 64, 128, 3),
}


def _time(fn, *args):
  """The median seconds of ``fn(*args)`` after a warm-up (bench_kernels' timer)."""
  return kernel_time(fn, *args)[1]


def _forced(params, bias):
  """Every boundary unit's bias set to ``bias`` (±50: boundaries always on or off)."""
  layers = tuple(
    lp._replace(b=lp.b.at[-1].set(bias)) if lp.w_above is not None else lp for lp in params.layers
  )
  return params._replace(layers=layers)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  rows = []
  for shape, (B, T, I, H, L) in SHAPES.items():
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    hm = rj.hmlstm((H,) * L)
    p_hm = hm.init(jax.random.key(0), I)
    lstm = rj.lstm(L * H)
    p_lstm = lstm.init(jax.random.key(0), I)
    runs = (
      (f"rj.lstm({L * H})", lstm, p_lstm),
      (f"rj.hmlstm({(H,) * L}), as initialised", hm, p_hm),
      (f"rj.hmlstm({(H,) * L}), boundaries on (no COPY)", hm, _forced(p_hm, 50.0)),
      (f"rj.hmlstm({(H,) * L}), boundaries off (COPY above level 1)", hm, _forced(p_hm, -50.0)),
    )
    for label, cell, params in runs:

      def loss(p, x, cell=cell):
        return jnp.sum(rj.scan(cell, p, x)[1] ** 2)

      fwd = jax.jit(lambda p, x, cell=cell: rj.scan(cell, p, x)[1])
      g = jax.jit(jax.grad(loss, argnums=(0, 1)))
      carry, _ = jax.jit(lambda p, x, cell=cell: rj.scan(cell, p, x))(params, xs)
      rate = [float(jnp.mean(z)) for z in carry.z] if isinstance(carry, rj.HMLSTMCarry) else None
      n_params = sum(v.size for v in jax.tree.leaves(params))
      rows.append(
        dict(
          shape=shape,
          B=B,
          T=T,
          I=I,
          cell=label,
          params=int(n_params),
          final_boundary_rate=rate,
          fwd_ms=1e3 * _time(fwd, params, xs),
          fwd_bwd_ms=1e3 * _time(g, params, xs),
        )
      )
      print(rows[-1], flush=True)
  base = {r["shape"]: r["fwd_bwd_ms"] for r in rows if r["cell"].startswith("rj.lstm")}
  for r in rows:
    r["vs_lstm"] = r["fwd_bwd_ms"] / base[r["shape"]]
    r["fwd_bwd_us_per_token"] = 1e3 * r["fwd_bwd_ms"] / (r["B"] * r["T"])
  info = machine()
  io.write_json(args.out / f"hmlstm_{info['backend']}.json", dict(machine=info, rows=rows))
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} "
    f"({info['device']}), jax {info['jax']}; float32; medians after a warm-up. Fwd+bwd: grad "
    "of sum(ys²) w.r.t. params and xs through rj.scan's hand-written BPTT; B=32, T=100, I=64.",
    "",
    "| levels | cell | params | fwd ms | fwd+bwd ms | fwd+bwd µs/token | vs the LSTM |",
    "|---|---|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['shape']} | {r['cell']} | {r['params']:,} | {r['fwd_ms']:.2f} | "
      f"{r['fwd_bwd_ms']:.2f} | {r['fwd_bwd_us_per_token']:.2f} | {r['vs_lstm']:.2f}x |"
    )
  io.atomic_write_text(args.out / f"hmlstm_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
