"""What does a user-written cell cost? rj.custom_cell's hints, one by one, against rj.lstm.

The same LSTM five ways, on the same shapes, in one process: the built-in `rj.lstm`
(itself an `rj.custom_cell` with every hint: hoisted projection, a hand-written local
backward, dw_h as one matmul), and the LSTM as a user writes it through
`rj.custom_cell`: with no hints (BPTT by `jax.vjp` of the step inside the reverse
scan), with the projection hint, with the projection and `rj.RecurrentMatmul` hints
(the README example), and with the built-in's hints written by the user; each with the
hand-written BPTT and with autodiff through `lax.scan`. Times forward and forward+backward (grad
of sum(ys²) w.r.t. params and xs), medians after a warm-up. Writes JSON and a
markdown table to ``--out`` (default ``benchmarks/results``).

    python benchmarks/bench_custom.py
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

SHAPES = {  # name: (B, T, I, H)
  "latency": (1, 1000, 128, 128),
  "medium": (32, 100, 256, 256),
}


def _time(fn, *args):
  """The median seconds of ``fn(*args)`` after a warm-up (bench_kernels' timer)."""
  return kernel_time(fn, *args)[1]


def plain_lstm(H, hints=""):
  """The LSTM as a user writes it: dict params, one step function; ``hints`` adds,
  cumulatively, ``"project"`` (``project`` and ``update``: the input matmul hoisted),
  ``"recurrent"`` (`rj.RecurrentMatmul`: dw_h as one matmul; the README example) or
  ``"backward"`` (`rj.LocalBackward` with its rule: the built-in's hints, written by a
  user)."""

  def init(key, input_size):
    p = rj.lstm(H).init(key, input_size)
    return {"w_x": p.w_x, "w_h": p.w_h, "b": p.b}

  def gates(z, c):
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c

  def step(p, carry, x):
    h, c = gates(project(p, x) + carry[0] @ p["w_h"], carry[1])
    return (h, c), h

  def initial_carry(batch_shape=(), dtype=jnp.float32):
    zeros = jnp.zeros((*batch_shape, H), dtype)
    return (zeros, zeros)

  def project(p, x):
    return x @ p["w_x"] + p["b"].reshape((1,) * (x.ndim - 1) + p["b"].shape)

  def update(p, carry, zx):
    h, c = gates(zx + carry[0] @ p["w_h"], carry[1])
    return (h, c), h

  def update_zh(p, carry, zx, zh):
    h, c = gates(zx + zh, carry[1])
    return (h, c), h

  def forward(p, carry, zx):
    i, f, g, o = jnp.split(zx + carry[0] @ p["w_h"], 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * carry[1] + i * g
    h = o * jnp.tanh(c)
    return (h, c), h, jnp.concatenate([i, f, g, o], -1)

  def backward(p, prev, carry, gates, d, dy):
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    dh, tc = d[0] + dy, jnp.tanh(carry[1])
    dc = d[1] + dh * o * (1 - tc * tc)
    dz = jnp.concatenate(
      [
        dc * g * i * (1 - i),
        dc * prev[1] * f * (1 - f),
        dc * i * (1 - g * g),
        dh * tc * o * (1 - o),
      ],
      -1,
    )
    return (dz @ p["w_h"].T, dc * f), dz, dz

  def rule(p, prev, gates, dzh):
    return {"w_h": prev[0].T @ dzh}

  kw = {
    "": {},
    "project": dict(project=project, update=update),
    "recurrent": dict(project=project, update=update_zh, recurrent=rj.RecurrentMatmul("w_h")),
    "backward": dict(project=project, backward=rj.LocalBackward(forward, backward, rule)),
  }[hints]
  return rj.custom_cell(init, step, initial_carry, name=f"lstm_{hints or 'plain'}", **kw)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  rows = []
  for shape in args.shapes:
    B, T, I, H = SHAPES[shape]
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    builtin = rj.lstm(H)
    p_builtin = builtin.init(jax.random.key(0), I)
    p_plain = plain_lstm(H).init(jax.random.key(0), I)
    cells = (
      ("rj.lstm", builtin, p_builtin),
      ("custom_cell, no hints", plain_lstm(H), p_plain),
      ("+ project", plain_lstm(H, "project"), p_plain),
      ("+ project + RecurrentMatmul (README)", plain_lstm(H, "recurrent"), p_plain),
      ("+ project + LocalBackward (rj.lstm's hints)", plain_lstm(H, "backward"), p_plain),
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
  autodiff = {(r["shape"], r["cell"]): r["fwd_bwd_ms"] for r in rows if r["backward"] == "autodiff"}
  for r in rows:
    r["vs_rj_lstm_bptt"] = r["fwd_bwd_ms"] / base[r["shape"]]
    r["vs_own_autodiff"] = r["fwd_bwd_ms"] / autodiff[(r["shape"], r["cell"])]
  info = machine()
  io.write_json(args.out / f"custom_{info['backend']}.json", dict(machine=info, rows=rows))
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} "
    f"({info['device']}), jax {info['jax']}; float32; medians after "
    "a warm-up. Fwd+bwd: grad of sum(ys²) w.r.t. params and xs.",
    "",
    "| shape (B,T,I=H) | cell | backward | fwd ms | fwd+bwd ms | vs rj.lstm bptt "
    "| vs the same cell's autodiff |",
    "|---|---|---|---:|---:|---:|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['shape']} ({r['B']},{r['T']},{r['H']}) | {r['cell']} | {r['backward']} | "
      f"{r['fwd_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | {r['vs_rj_lstm_bptt']:.2f}x | "
      f"{r['vs_own_autodiff']:.2f}x |"
    )
  io.atomic_write_text(args.out / f"custom_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
