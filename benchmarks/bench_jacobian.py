"""How fast are the Jacobian tools? Writes JSON and markdown to ``--out``.

1. The full Lyapunov spectrum (H = 256, 10,000 steps, float64, a QR every
   step): ``lyapunov_spectrum`` with ``qr="cholesky"`` (the float64 default)
   and ``qr="householder"`` (the previous kernel, the reference), against NumPy
   loops of the same two algorithms from the same ``Q_0``; and the Cholesky
   route re-orthonormalising every 2 steps. Each rnnjax route runs the full
   10,000 steps once (wall time, exponents); the per-step times of all five
   come from interleaved rounds of 1000 steps, so that the load of a shared
   machine falls on all of them alike.
2. Step Jacobians (T = 1000, H = 256) against a NumPy loop.
3. ``jac.norms`` on the issue's ``[200, 128, 128]`` float32 Jacobians.
4. Every ``rj.jacobian`` function on the README's example (``rj.elman(32)``,
   I = 8, T = 100, float32): first call (with compilation) and warm.

    python benchmarks/bench_jacobian.py
    python benchmarks/bench_jacobian.py --lyap-steps 2000     # a quicker look

OpenBLAS (NumPy's, and SciPy's, which jaxlib calls for LAPACK) runs one
thread unless ``OPENBLAS_NUM_THREADS`` says otherwise: on a machine with few
cores its thread pool competes with XLA's, and LAPACK calls then take up to
100x longer, erratically (see benchmarks/README.md).
"""

from __future__ import annotations

import os

BLAS_THREADS = "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_THREADS)  # before NumPy loads OpenBLAS

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine

import rnnjax as rj
from rnnjax import jacobian
from rnnjax.apps import io

# ----------------------------------------------------------------- configuration
H, I = 256, 32
T_JAC = 1000
LYAP_STEPS = 10_000
NUMPY_STEPS = 1000  # steps of each interleaved timing round (NumPy runs only these)
REPS = 3  # interleaved rounds; the per-step time is their median
GAIN = 1.5  # a chaotic tanh RNN: W_ij ~ N(0, g²/H)
BLOCK = 2  # qr_every of the blocked row: BLOCK·(λ₁ − λ_S) ≈ 11 < 16, within the bound
NORMS_SHAPE = (200, 128, 128)  # the jac.norms case, float32
README_H, README_I, README_T = 32, 8, 100


def setup():
  cell = rj.elman(H, recurrent_init=rj.init.gaussian(GAIN))
  params = cell.init(jax.random.key(0), I)
  return cell, jax.tree.map(lambda a: a.astype(jnp.float64), params)


def numpy_step_jacobians(p, xs, h):
  w_x, w_h, b = (np.asarray(a, np.float64) for a in p)
  out = np.empty((len(xs), H, H))
  for t, x in enumerate(xs):
    h = np.tanh(x @ w_x + h @ w_h + b)
    out[t] = (1 - h * h)[:, None] * w_h.T  # diag(f'(z_t)) W
  return out


def numpy_householder(Z):
  Q, R = np.linalg.qr(Z)
  d = np.diag(R)
  return Q * np.sign(d)[None], np.log(np.abs(d))


def numpy_cholesky(Z):
  """rnnjax's Cholesky QR step with its certificate: (Q, log diag R) or None."""
  try:
    L = np.linalg.cholesky(Z.T @ Z)  # G = L Lᵀ
  except np.linalg.LinAlgError:
    return None
  Q = scipy.linalg.solve_triangular(L, Z.T, lower=True).T  # Z L⁻ᵀ
  ok = np.linalg.norm(Q.T @ Q - np.eye(Z.shape[1])) <= jacobian.CHOLESKY_ORTHOGONALITY_TOL
  return (Q, np.log(np.diag(L))) if ok else None


def numpy_lyapunov(p, hs, Q, transient, qr):
  """The Benettin loop of ``lyapunov_spectrum`` (QR every step) in NumPy:
  Householder with the [S, S] Jacobian, or Cholesky with ``diag(f') (W Q)``,
  Householder at the ends of the counted steps and where the certificate fails.

  It reads the states ``h_t`` of rnnjax's trajectory instead of computing them
  (an [H] x [H, H] product a step, about 1% of the time): in a chaotic RNN
  rounding differences in ``h`` grow like ``exp(λ₁ t)``, and two trajectories
  apart by one rounding error are unrelated after a few hundred steps."""
  w_h = np.asarray(p.w_h, np.float64)
  T = len(hs)
  acc, fallbacks = np.zeros(Q.shape[1]), 0
  for t, h in enumerate(hs):
    if qr == "householder":
      Q, logd = numpy_householder(((1 - h * h)[:, None] * w_h.T) @ Q)
    else:
      Z = (1 - h * h)[:, None] * (w_h.T @ Q)
      end = t in (T - 1, transient - 1)
      out = None if end else numpy_cholesky(Z)
      fallbacks += out is None and not end
      Q, logd = numpy_householder(Z) if out is None else out
    if t >= transient:
      acc += logd
  return np.sort(acc / (T - transient))[::-1], fallbacks


def timed(fn, *args, reps=3):
  jax.block_until_ready(fn(*args))  # compile / warm up
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts)), out


def timed_once(fn, *args):
  """Compile ahead of time, then one timed run (for the runs of many seconds)."""
  compiled = jax.jit(fn).lower(*args).compile()
  t0 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  return time.perf_counter() - t0, out


def lyapunov_rows(cell, params, T):
  """The full runs (wall time, exponents), then the per-step times of every
  implementation from interleaved rounds on ``NUMPY_STEPS`` steps: the machine
  is shared, and running each implementation once per round exposes all of
  them to the same load."""
  xl = 0.1 * jax.random.normal(jax.random.key(2), (T, I), jnp.float64)
  routes = {
    'rnnjax qr="cholesky" (default in float64)': ("cholesky", 1),
    'rnnjax qr="householder" (previous kernel)': ("householder", 1),
    f'rnnjax qr="cholesky", qr_every={BLOCK}': ("cholesky", BLOCK),
  }

  def lyap(qr, qr_every, steps):
    return lambda p, x: jacobian.lyapunov_spectrum(
      cell, p, x, transient=steps // 10, qr=qr, qr_every=qr_every
    )

  full = {name: timed_once(lyap(qr, m, T), params, xl) for name, (qr, m) in routes.items()}

  n = min(NUMPY_STEPS, T)
  xn = xl[:n]
  compiled = {
    name: jax.jit(lyap(qr, m, n)).lower(params, xn).compile() for name, (qr, m) in routes.items()
  }
  # NumPy: the same algorithms from the same Q_0 (lyapunov_spectrum's default key)
  Q0 = np.asarray(jnp.linalg.qr(jax.random.normal(jax.random.key(0), (H, H), jnp.float64))[0])
  prevs, final = jacobian.trajectory(cell, params, xn)
  hs = np.concatenate([np.asarray(prevs[1:]), np.asarray(final)[None]])  # h_1 .. h_n
  numpy_names = {"NumPy loop, householder": "householder", "NumPy loop, cholesky": "cholesky"}
  times = {name: [] for name in [*routes, *numpy_names]}
  short = {}
  for _ in range(REPS):
    for name, fn in compiled.items():
      t0 = time.perf_counter()
      short[name] = np.asarray(jax.block_until_ready(fn(params, xn)))
      times[name].append(time.perf_counter() - t0)
    for name, qr in numpy_names.items():
      t0 = time.perf_counter()
      short[name] = numpy_lyapunov(params, hs, Q0, n // 10, qr)
      times[name].append(time.perf_counter() - t0)

  lam_hh = np.asarray(full['rnnjax qr="householder" (previous kernel)'][1])
  ref_n = short['rnnjax qr="householder" (previous kernel)']
  rows = []
  for name, ts in times.items():
    qr_every = routes[name][1] if name in routes else 1
    row = dict(
      task=f"Lyapunov H={H}, {T} steps, float64, QR every "
      + ("step" if qr_every == 1 else f"{qr_every} steps"),
      impl=name,
      steps=T,
      seconds=float(np.median(ts)) * T / n,
      per_step_ms=float(np.median(ts)) / n * 1e3,
      round_seconds=ts,
      round_steps=n,
    )
    if name in routes:
      t_full, lam = full[name]
      row.update(
        full_run_seconds=t_full,
        max_abs_diff_vs_householder=float(np.max(np.abs(np.asarray(lam) - lam_hh))),
        lambda_1=float(lam[0]),
      )
    else:
      lam, fallbacks = short[name]
      row.update(
        max_abs_diff_vs_householder=float(np.max(np.abs(lam - ref_n))),
        compared_on_steps=n,
        cholesky_fallbacks=fallbacks if numpy_names[name] == "cholesky" else None,
      )
    rows.append(row)
  return rows


def step_jacobian_rows(cell, params):
  xs = jax.random.normal(jax.random.key(1), (T_JAC, I), jnp.float64)
  t_jax, Js = timed(lambda p, x: jacobian.step_jacobians(cell, p, x), params, xs)
  t0 = time.perf_counter()
  Jn = numpy_step_jacobians(params, np.asarray(xs), np.zeros(H))
  t_np = time.perf_counter() - t0
  assert np.allclose(Js, Jn, atol=1e-10)
  task = f"step Jacobians T={T_JAC}, H={H}, float64"
  return [
    dict(task=task, impl="rnnjax step_jacobians", seconds=t_jax),
    dict(task=task, impl="NumPy loop", seconds=t_np),
  ]


def norms_rows():
  Js = jax.random.normal(jax.random.key(3), NORMS_SHAPE, jnp.float32) / NORMS_SHAPE[-1] ** 0.5
  task = f"norms of {list(NORMS_SHAPE)} float32 Jacobians"
  rows = []
  for impl, fn in [
    ("rnnjax jac.norms", jacobian.norms),
    ("jnp.linalg.svd(compute_uv=False)", lambda J: jnp.linalg.svd(J, compute_uv=False)),
    ("jnp.linalg.norm(ord=2)", lambda J: jnp.linalg.norm(J, ord=2, axis=(-2, -1))),
  ]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(Js))
    first = time.perf_counter() - t0
    rows.append(dict(task=task, impl=impl, first_call_s=first, seconds=timed(fn, Js)[0]))
  t0 = time.perf_counter()
  np.linalg.norm(np.asarray(Js), ord=2, axis=(-2, -1))
  rows.append(dict(task=task, impl="numpy.linalg.norm(ord=2)", seconds=time.perf_counter() - t0))
  return rows


NORMS_SNIPPET = """
import time, jax, jax.numpy as jnp
from rnnjax import jacobian
Js = jax.random.normal(jax.random.key(3), {shape}, jnp.float32) / {shape}[-1] ** 0.5
ts = []
for _ in range(4):
  t0 = time.perf_counter(); jax.block_until_ready(jacobian.norms(Js))
  ts.append(time.perf_counter() - t0)
print(ts)
"""


def blas_threads_rows():
  """jac.norms in a fresh process with OpenBLAS's thread pool at the core count
  (its default), the setting of the issue's report."""
  env = dict(os.environ, OPENBLAS_NUM_THREADS=str(os.cpu_count()))
  code = NORMS_SNIPPET.format(shape=NORMS_SHAPE)
  out = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
  )
  ts = ast.literal_eval(out.stdout.strip().splitlines()[-1])
  return [
    dict(
      task=f"norms of {list(NORMS_SHAPE)} float32 Jacobians",
      impl=f"rnnjax jac.norms, OPENBLAS_NUM_THREADS={os.cpu_count()} (fresh process)",
      first_call_s=ts[0],
      seconds=float(np.median(ts[1:])),
    )
  ]


def readme_rows():
  """Every rj.jacobian function on the README's example, in the README's order."""
  cell = rj.elman(README_H)
  params = cell.init(jax.random.key(0), README_I)
  xs = jax.random.normal(jax.random.key(1), (README_T, README_I), jnp.float32)
  Js = jacobian.step_jacobians(cell, params, xs)  # inputs of the functions that take Js
  log_sv = jacobian.log_singular_values(Js)
  h = jnp.zeros(README_H, jnp.float32)
  calls = {
    "trajectory": lambda: jacobian.trajectory(cell, params, xs),
    "step_jacobians": lambda: jacobian.step_jacobians(cell, params, xs),
    "norms": lambda: jacobian.norms(Js),
    "lecture_bound": lambda: jacobian.lecture_bound(cell, params, xs),
    "pascanu_conditions": lambda: jacobian.pascanu_conditions(cell, params).sigma_max,
    "log_product_norms": lambda: jacobian.log_product_norms(Js),
    "gradient_norms_vs_lag": lambda: jacobian.gradient_norms_vs_lag(cell, params, xs),
    "lyapunov_spectrum": lambda: jacobian.lyapunov_spectrum(cell, params, xs, k=4, transient=25),
    "diagnose": lambda: jacobian.diagnose(cell, params, xs)["verdict"],
    "product_norm_power": lambda: jacobian.product_norm_power(cell, params, xs),
    "log_singular_values": lambda: jacobian.log_singular_values(Js),
    "window_spectra": lambda: jacobian.window_spectra(Js, 10),
    "isometry": lambda: jacobian.isometry(log_sv),
    "max_lyapunov_perturbation": lambda: jacobian.max_lyapunov_perturbation(cell, params, xs),
    "flatten_state": lambda: jacobian.flatten_state(cell, h),
    "unflatten_state": lambda: jacobian.unflatten_state(cell, h, h),
    "parallel_outlook": lambda: jacobian.parallel_outlook(cell, params, xs)["iterations"],
  }
  # PascanuConditions is a result type; parallel_prediction is deprecated (a warning)
  missing = set(jacobian.__all__) - set(calls) - {"PascanuConditions", "parallel_prediction"}
  assert not missing, f"time these too: {sorted(missing)}"
  task = f"README example (elman({README_H}), I={README_I}, T={README_T}, float32)"
  rows = []
  for name, fn in calls.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    rows.append(dict(task=task, impl=f"jac.{name}", first_call_s=first, seconds=timed(fn)[0]))
  return rows


def markdown(info, sections):
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']}, "
    f"jax {info['jax']}, OPENBLAS_NUM_THREADS={info['openblas_num_threads']}, "
    f"load average {info['load_average']} at the start, {info['load_average_end']} at the "
    "end. Tools: medians of 3 runs after a warm-up (first call: with compilation).",
  ]
  lyap, jacs, nrm, readme = sections
  n = lyap[0]["round_steps"]
  T = lyap[0]["steps"]
  md += [
    "",
    f"Lyapunov spectrum, H={H}, float64. Per-step time: median of {REPS} interleaved rounds "
    f"of {n} steps, each running every implementation in turn, scaled to {T} steps; full run: "
    f"{T} steps once (rnnjax only). λ compared with Householder's on the full run "
    f"(rnnjax) or on the {n}-step rounds (NumPy, which reads rnnjax's trajectory).",
    "",
    f"| QR | implementation | s per {T} steps | vs NumPy Householder | full run s "
    "| max abs diff of λ vs Householder |",
    "|---|---|---:|---:|---:|---:|",
  ]
  t_np = next(r["seconds"] for r in lyap if r["impl"] == "NumPy loop, householder")
  for r in lyap:
    fb = r.get("cholesky_fallbacks")
    note = f" ({fb} fallbacks)" if fb is not None else ""
    full = f"{r['full_run_seconds']:.2f}" if "full_run_seconds" in r else ""
    md.append(
      f"| {r['task'].rsplit(', ', 1)[1]} | {r['impl']}{note} | {r['seconds']:.2f} "
      f"| {t_np / r['seconds']:.1f}x | {full} | {r['max_abs_diff_vs_householder']:.1e} |"
    )
  md += ["", "| task | implementation | first call s | warm s |", "|---|---|---:|---:|"]
  for r in jacs + nrm + readme:
    first = f"{r['first_call_s']:.3f}" if "first_call_s" in r else ""
    md.append(f"| {r['task']} | {r['impl']} | {first} | {r['seconds']:.4f} |")
  return "\n".join(md) + "\n"


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--lyap-steps", type=int, default=LYAP_STEPS)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args(argv)
  info = machine()
  info["openblas_num_threads"] = os.environ["OPENBLAS_NUM_THREADS"]
  info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
  readme = readme_rows()  # float32, as in the README
  nrm = norms_rows() + blas_threads_rows()
  jax.config.update("jax_enable_x64", True)  # the rest in float64 on both sides
  cell, params = setup()
  jacs = step_jacobian_rows(cell, params)
  lyap = lyapunov_rows(cell, params, args.lyap_steps)
  info["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
  for r in lyap + jacs + nrm + readme:
    print(r, flush=True)
  md = markdown(info, (lyap, jacs, nrm, readme))
  args.out.mkdir(parents=True, exist_ok=True)
  rows = dict(lyapunov=lyap, step_jacobians=jacs, norms=nrm, readme=readme)
  io.write_json(args.out / f"jacobian_{info['backend']}.json", dict(machine=info, **rows))
  io.atomic_write_text(args.out / f"jacobian_{info['backend']}.md", md)
  print(md)


if __name__ == "__main__":
  main()
