"""How fast are the Jacobian tools? Step Jacobians (T=1000, H=256) and the full
Lyapunov spectrum (H=256, 10,000 steps), against the same algorithms as NumPy
loops, in one process. Writes JSON and markdown to ``--out``.

    python benchmarks/bench_jacobian.py
    python benchmarks/bench_jacobian.py --lyap-steps 2000     # a quicker look
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine

import rnnjax as rj
from rnnjax import jacobian
from rnnjax.apps import io

# ----------------------------------------------------------------- configuration
H, I = 256, 32
T_JAC = 1000
LYAP_STEPS = 10_000
GAIN = 1.5  # a chaotic tanh RNN: W_ij ~ N(0, g²/H)


def setup():
  cell = rj.elman(H, recurrent_init=rj.init.gaussian(GAIN))
  params = cell.init(jax.random.key(0), I)
  return cell, params


def numpy_step_jacobians(p, xs, h):
  w_x, w_h, b = (np.asarray(a, np.float64) for a in p)
  out = np.empty((len(xs), H, H))
  for t, x in enumerate(xs):
    h = np.tanh(x @ w_x + h @ w_h + b)
    out[t] = (1 - h * h)[:, None] * w_h.T  # diag(f'(z_t)) W
  return out


def numpy_lyapunov(p, xs, h, transient):
  w_x, w_h, b = (np.asarray(a, np.float64) for a in p)
  Q = np.linalg.qr(np.random.default_rng(0).normal(size=(H, H)))[0]
  acc = np.zeros(H)
  for t, x in enumerate(xs):
    h_new = np.tanh(x @ w_x + h @ w_h + b)
    J = (1 - h_new * h_new)[:, None] * w_h.T
    Q, R = np.linalg.qr(J @ Q)
    d = np.diag(R)
    Q = Q * np.sign(d)[None]
    if t >= transient:
      acc += np.log(np.abs(d))
    h = h_new
  return np.sort(acc / (len(xs) - transient))[::-1]


def timed(fn, *args, reps=3):
  jax.block_until_ready(fn(*args))  # compile / warm up
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts)), out


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--lyap-steps", type=int, default=LYAP_STEPS)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args(argv)
  jax.config.update("jax_enable_x64", True)  # both sides in float64
  info = machine()
  cell, params = setup()
  params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
  xs = jax.random.normal(jax.random.key(1), (T_JAC, I), jnp.float64)
  rows = []

  t_jax, Js = timed(lambda p, x: jacobian.step_jacobians(cell, p, x), params, xs)
  t0 = time.perf_counter()
  Jn = numpy_step_jacobians(params, np.asarray(xs), np.zeros(H))
  t_np = time.perf_counter() - t0
  assert np.allclose(Js, Jn, atol=1e-10)
  rows.append(dict(task=f"step Jacobians T={T_JAC}, H={H}", rnnjax_s=t_jax, numpy_s=t_np))

  T = args.lyap_steps
  transient = T // 10
  xl = 0.1 * jax.random.normal(jax.random.key(2), (T, I), jnp.float64)

  def lyap(p, x):
    return jacobian.lyapunov_spectrum(cell, p, x, transient=transient)

  t_jax, lam = timed(lyap, params, xl, reps=1)
  t0 = time.perf_counter()
  lam_np = numpy_lyapunov(params, np.asarray(xl), np.zeros(H), transient)
  t_np = time.perf_counter() - t0
  rows.append(
    dict(
      task=f"full Lyapunov spectrum H={H}, {T} steps, QR every step",
      rnnjax_s=t_jax,
      numpy_s=t_np,
      lambda_1=float(lam[0]),
      max_abs_diff_vs_numpy=float(np.max(np.abs(lam - lam_np))),
    )
  )

  def lyap5(p, x):
    return jacobian.lyapunov_spectrum(cell, p, x, transient=transient, qr_every=5)

  t_jax5, lam5 = timed(lyap5, params, xl, reps=1)
  rows.append(
    dict(
      task=f"full Lyapunov spectrum H={H}, {T} steps, QR every 5 steps (NumPy: every step)",
      rnnjax_s=t_jax5,
      numpy_s=t_np,
      lambda_1=float(lam5[0]),
      max_abs_diff_vs_every_step=float(np.max(np.abs(lam5 - lam))),
    )
  )
  for r in rows:
    r["speedup"] = r["numpy_s"] / r["rnnjax_s"]
    print(r, flush=True)

  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']}, "
    f"jax {info['jax']}; float64; medians of 3 runs after a warm-up "
    "(Lyapunov: one run after warm-up).",
    "",
    "| task | rnnjax (jit, lax.scan) s | NumPy loop s | speed-up |",
    "|---|---:|---:|---:|",
  ]
  md += [
    f"| {r['task']} | {r['rnnjax_s']:.2f} | {r['numpy_s']:.2f} | {r['speedup']:.1f}x |"
    for r in rows
  ]
  args.out.mkdir(parents=True, exist_ok=True)
  io.write_json(args.out / f"jacobian_{info['backend']}.json", dict(machine=info, rows=rows))
  io.atomic_write_text(args.out / f"jacobian_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
