"""What does a user-written cell cost? rj.custom_cell's hint-free path against rj.lstm.

The same LSTM three ways, on the same shapes, in one process: the built-in `rj.lstm`
(hand-derived rules: hoisted projection, hand-written local backward, dw_h as one
matmul), and the LSTM written plainly as a step function through `rj.custom_cell`
(BPTT by `jax.vjp` of the step inside the reverse scan), each with the hand-written
BPTT and with autodiff through `lax.scan`. Times forward and forward+backward (grad
of sum(ys²) w.r.t. params and xs), medians after a warm-up. Writes JSON and a
markdown table to ``--out`` (default ``benchmarks/results``).

    python benchmarks/bench_custom.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine  # the same machine description as the kernel tables

import rnnjax as rj
from rnnjax.apps import io

SHAPES = {  # name: (B, T, I, H)
  "latency": (1, 1000, 128, 128),
  "medium": (32, 100, 256, 256),
}
MIN_REPS, MAX_REPS, TARGET_SECONDS = 5, 30, 3.0


def _time(fn, *args):
  jax.block_until_ready(fn(*args))
  times = []
  while len(times) < MIN_REPS or (sum(times) < TARGET_SECONDS and len(times) < MAX_REPS):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def plain_lstm(H, hinted=False):
  """The LSTM as a user writes it: dict params, one step function; with ``hinted``
  also the projection hint (``project`` and ``update``), so the input matmul is hoisted."""

  def init(key, input_size):
    p = rj.lstm(H).init(key, input_size)
    return {"w_x": p.w_x, "w_h": p.w_h, "b": p.b}

  def step(p, carry, x):
    h, c = carry
    z = x @ p["w_x"] + h @ p["w_h"] + p["b"].reshape((1,) * (x.ndim - 1) + p["b"].shape)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h

  def initial_carry(batch_shape=(), dtype=jnp.float32):
    zeros = jnp.zeros((*batch_shape, H), dtype)
    return (zeros, zeros)

  def project(p, x):
    return x @ p["w_x"] + p["b"].reshape((1,) * (x.ndim - 1) + p["b"].shape)

  def update(p, carry, zx):
    h, c = carry
    i, f, g, o = jnp.split(zx + h @ p["w_h"], 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h

  if hinted:
    return rj.custom_cell(
      init, step, initial_carry, name="hinted_lstm", project=project, update=update
    )
  return rj.custom_cell(init, step, initial_carry, name="plain_lstm")


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  rows = []
  for shape in args.shapes:
    B, T, I, H = SHAPES[shape]
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    builtin, plain, hinted = rj.lstm(H), plain_lstm(H), plain_lstm(H, hinted=True)
    p_builtin = builtin.init(jax.random.key(0), I)
    p_plain = plain.init(jax.random.key(0), I)
    cells = (
      ("rj.lstm", builtin, p_builtin),
      ("custom_cell", plain, p_plain),
      ("custom_cell + projection hint", hinted, p_plain),
    )
    for label, cell, params in cells:
      fwd = jax.jit(lambda p, x, cell=cell: rj.scan(cell, p, x)[1])
      t_fwd = _time(fwd, params, xs)
      for mode in ("bptt", "autodiff"):

        def loss(p, x, cell=cell, mode=mode):
          return jnp.sum(rj.scan(cell, p, x, backward=mode)[1] ** 2)

        g = jax.jit(jax.grad(loss, argnums=(0, 1)))
        rows.append(
          dict(
            shape=shape,
            B=B,
            T=T,
            I=I,
            H=H,
            cell=label,
            backward=mode,
            fwd_ms=1e3 * t_fwd,
            fwd_bwd_ms=1e3 * _time(g, params, xs),
          )
        )
        print(rows[-1], flush=True)
  base = {
    (r["shape"]): r["fwd_bwd_ms"]
    for r in rows
    if r["cell"] == "rj.lstm" and r["backward"] == "bptt"
  }
  for r in rows:
    r["vs_rj_lstm_bptt"] = r["fwd_bwd_ms"] / base[r["shape"]]
  info = machine()
  io.write_json(args.out / f"custom_{info['backend']}.json", dict(machine=info, rows=rows))
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} "
    f"({info['device']}), jax {info['jax']}; float32; medians after "
    "a warm-up. Fwd+bwd: grad of sum(ys²) w.r.t. params and xs.",
    "",
    "| shape (B,T,I=H) | cell | backward | fwd ms | fwd+bwd ms | vs rj.lstm bptt |",
    "|---|---|---|---:|---:|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['shape']} ({r['B']},{r['T']},{r['H']}) | {r['cell']} | {r['backward']} | "
      f"{r['fwd_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | {r['vs_rj_lstm_bptt']:.2f}x |"
    )
  io.atomic_write_text(args.out / f"custom_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
