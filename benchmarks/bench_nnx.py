"""What does the one-line swap buy? rnnjax.nnx.RNN against flax's nnx.RNN, on the same shapes.

flax NNX layers as a flax user writes them, ``nnx.RNN(nnx.OptimizedLSTMCell(I, H))``,
``nnx.RNN(nnx.LSTMCell(I, H))`` and ``nnx.RNN(nnx.GRUCell(I, H))``, against the
drop-in ``rnnjax.nnx.RNN(rj.lstm(H), I)`` and ``rnnjax.nnx.RNN(rj.gru(H,
reset="after"), I)`` (the same function as flax's GRUCell) with rnnjax's default
backward (the hand-written BPTT) and with ``backward="autodiff"``. Every layer is
batch-major ``[B, T, I]``, called as ``layer(xs, seq_lengths=lengths)`` with
lengths drawn in ``[T/2, T]``. Each is jitted the NNX functional way
(``nnx.split`` once, ``jax.jit`` of a function of the state), so both sides pay
the same framework cost. Times forward and forward+backward (grad of sum(ys²)
w.r.t. the params and xs), float32, medians after a warm-up. Writes JSON and a
markdown table to ``--out`` (default ``benchmarks/results``).

    python benchmarks/bench_nnx.py                  # both shapes
    python benchmarks/bench_nnx.py --shapes small
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import _time, machine  # one timer and machine description for every table

import rnnjax as rj
import rnnjax.nnx as rnx
from rnnjax.apps import io

# ----------------------------------------------------------------- configuration
SHAPES = {  # name: (B, T, I, H)
  "small": (16, 50, 32, 64),
  "medium": (32, 100, 128, 128),
}
LAYERS = {  # name: (cell kind, a function of (I, H, rngs) making the layer)
  "flax nnx.RNN(OptimizedLSTMCell)": (
    "lstm",
    lambda I, H, r: nnx.RNN(nnx.OptimizedLSTMCell(I, H, rngs=r)),
  ),
  "flax nnx.RNN(LSTMCell)": ("lstm", lambda I, H, r: nnx.RNN(nnx.LSTMCell(I, H, rngs=r))),
  "rnnjax.nnx.RNN(rj.lstm)": ("lstm", lambda I, H, r: rnx.RNN(rj.lstm(H), I, rngs=r)),
  "rnnjax.nnx.RNN(rj.lstm), autodiff": (
    "lstm",
    lambda I, H, r: rnx.RNN(rj.lstm(H), I, rngs=r, backward="autodiff"),
  ),
  "flax nnx.RNN(GRUCell)": ("gru", lambda I, H, r: nnx.RNN(nnx.GRUCell(I, H, rngs=r))),
  "rnnjax.nnx.RNN(rj.gru)": ("gru", lambda I, H, r: rnx.RNN(rj.gru(H, reset="after"), I, rngs=r)),
  "rnnjax.nnx.RNN(rj.gru), autodiff": (
    "gru",
    lambda I, H, r: rnx.RNN(rj.gru(H, reset="after"), I, rngs=r, backward="autodiff"),
  ),
}  # fmt: skip
BASELINE = {"lstm": "flax nnx.RNN(OptimizedLSTMCell)", "gru": "flax nnx.RNN(GRUCell)"}


def timings(layer, xs, lengths):
  """(fwd_s, fwd+bwd_s, compile_s of fwd+bwd) of ``layer`` jitted as a function of its state."""
  # flax's layer draws its zero carry from an RngStream it mutates, which a
  # function of the state cannot do under jax.grad: it gets the zeros as an argument
  carry = None
  if isinstance(layer, nnx.RNN):
    carry = layer.cell.initialize_carry((xs.shape[0], xs.shape[-1]), nnx.Rngs(0))
  graphdef, state = nnx.split(layer)

  def forward(state, xs):
    return nnx.merge(graphdef, state)(xs, initial_carry=carry, seq_lengths=lengths)

  def loss(state, xs):
    return jnp.sum(forward(state, xs) ** 2)

  fwd = jax.jit(forward)
  grad = jax.jit(jax.grad(loss, argnums=(0, 1), allow_int=True))  # allow_int: flax's RNG key
  _, t_fwd = _time(fwd, state, xs)
  compile_s, t_grad = _time(grad, state, xs)
  return t_fwd, t_grad, compile_s


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
  parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = parser.parse_args(argv)
  info = machine() | {"flax": _flax_version(), "load_avg_1m_at_start": os.getloadavg()[0]}
  rows = []
  for shape in args.shapes:
    B, T, I, H = SHAPES[shape]
    xs = jax.random.normal(jax.random.key(0), (B, T, I))
    lengths = jax.random.randint(jax.random.key(1), (B,), T // 2, T + 1)
    for name, (kind, make) in LAYERS.items():
      t_fwd, t_grad, compile_s = timings(make(I, H, nnx.Rngs(0)), xs, lengths)
      rows.append(
        dict(shape=shape, B=B, T=T, I=I, H=H, cell=kind, layer=name, fwd_ms=1e3 * t_fwd,
             fwd_bwd_ms=1e3 * t_grad, compile_s=compile_s)
      )  # fmt: skip
      print(f"{shape:7s} {name:38s} fwd {1e3 * t_fwd:8.2f} ms  fwd+bwd {1e3 * t_grad:8.2f} ms")
  base = {(r["shape"], r["layer"]): r for r in rows}
  for r in rows:
    b = base[(r["shape"], BASELINE[r["cell"]])]
    r["fwd_speedup"] = b["fwd_ms"] / r["fwd_ms"]
    r["fwd_bwd_speedup"] = b["fwd_bwd_ms"] / r["fwd_bwd_ms"]

  args.out.mkdir(parents=True, exist_ok=True)
  io.write_json(args.out / f"nnx_{info['backend']}.json", dict(machine=info, rows=rows))
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} "
    f"({info['device']}), jax {info['jax']}, flax {info['flax']}; 1-minute load average "
    f"{info['load_avg_1m_at_start']:.1f} at the start (a shared machine: other work ran "
    f"beside this); float32, batch-major, "
    f"seq_lengths in [T/2, T]; medians after a warm-up. Fwd+bwd: grad of sum(ys²) "
    f"w.r.t. params and xs. Speed-up: the flax layer's time over this row's "
    f"(OptimizedLSTMCell for the LSTM, GRUCell for the GRU; > 1 is faster).",
    "",
    "| shape (B,T,I,H) | layer | fwd ms | fwd+bwd ms | fwd speed-up | fwd+bwd speed-up |",
    "|---|---|---:|---:|---:|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['shape']} ({r['B']},{r['T']},{r['I']},{r['H']}) | {r['layer']} | "
      f"{r['fwd_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | {r['fwd_speedup']:.2f}x | "
      f"{r['fwd_bwd_speedup']:.2f}x |"
    )
  io.atomic_write_text(args.out / f"nnx_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


def _flax_version():
  import flax

  return flax.__version__


if __name__ == "__main__":
  main()
