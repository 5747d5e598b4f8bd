"""Where does the CPU time of rnnjax's scan kernels go?

The profile behind the CPU rows of ``kernels_cpu.md``: per-op times of the LSTM
and the GRU (reset after, the peers' GRU) at the medium shape, read from a
``jax.profiler`` trace with XLA's per-op trace events on (in a child process,
since the events slow the ops they time); then the ablations that explain
them, timed without trace events (medians):

- each step's input: an LSTM forward as a plain ``lax.scan`` with σ of each
  gate's slice, with one σ over the whole ``[B, 4H]`` block, and through
  rnnjax's kernel scan, which reads each step's input a step ahead; the GRU's
  forward step under ``lax.scan`` and under the kernel scan;
- the host allocator: the LSTM in fresh processes with glibc's allocator as it
  is and with `rnnjax.tune_host_allocator`, alternated, twice each;
- the recurrent matmul: its time per step in the LSTM's loop and alone;
- the ``unroll`` factor of ``rj.scan`` at every shape.

Writes ``profile_<backend>.json`` and ``.md`` to ``--out`` (default
``benchmarks/results``).

    python benchmarks/profile_kernels.py
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnjax as rj
from rnnjax._src import kernel  # the private kernel scan, timed against lax.scan
from rnnjax.apps import io

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import SHAPES, _time, machine

MEDIUM = SHAPES["medium"]
TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def ms(fn, *args):
  return 1e3 * _time(fn, *args)[1]


def make_cell(name, H):
  return rj.lstm(H) if name == "lstm" else rj.gru(H, reset="after")


def functions(cell, unroll=1):
  def fwd(p, x):
    return rj.scan(cell, p, x, unroll=unroll)[1]

  def loss(p, x):
    return jnp.sum(rj.scan(cell, p, x, unroll=unroll)[1] ** 2)

  return jax.jit(fwd), jax.jit(jax.grad(loss, argnums=(0, 1)))


def medium_runs():
  """(name, what, fn, params, xs) of the LSTM and GRU at the medium shape."""
  B, T, I, H = MEDIUM
  xs = jax.random.normal(jax.random.key(1), (T, B, I))
  runs = []
  for name in ("lstm", "gru"):
    cell = make_cell(name, H)
    p = cell.init(jax.random.key(0), I)
    fwd, grad = functions(cell)
    runs += [(name, "fwd", fwd, p, xs), (name, "fwd+bwd", grad, p, xs)]
  return runs


def lone_matmul():
  """The LSTM's recurrent matmul alone in a loop, and its arguments."""
  B, T, _, H = MEDIUM

  def alone(h0, w_h):
    def body(h, _):
      z = h @ w_h
      return jnp.tanh(sum(z[:, k * H : (k + 1) * H] for k in range(4)) * 0.3), None

    return lax.scan(body, h0, None, length=T)[0]

  w_h = jax.random.normal(jax.random.key(2), (H, 4 * H)) * H**-0.5
  return jax.jit(alone), (jax.random.normal(jax.random.key(3), (B, H)), w_h)


# ----------------------------------------------------------------- per-op trace (child)
def op_times(fn, *args, reps=5):
  """{op name: (ms per call of fn, executions per call)} from a profiler trace."""
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  d = tempfile.mkdtemp()
  try:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(reps):
        jax.block_until_ready(fn(*args))
    path = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)[0]
    with gzip.open(path) as f:
      trace = json.load(f)
  finally:
    shutil.rmtree(d, ignore_errors=True)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  agg = collections.defaultdict(lambda: [0, 0.0])
  skip = ("$", "end:", "Thunk", "Slinky", "Pjit", "Common", "Parse", "Allocate", "Handle")
  for e in events:
    name = e.get("name", "")
    if e.get("ph") == "X" and not name.startswith(skip) and not name.startswith("while"):
      agg[name][0] += 1
      agg[name][1] += e.get("dur", 0)
  return {k: (d / 1e3 / reps, n // reps) for k, (n, d) in agg.items()}


def _trace_child():
  rj.host.tune_host_allocator()
  out = {f"{name} {what}": op_times(fn, p, xs) for name, what, fn, p, xs in medium_runs()}
  fn, args = lone_matmul()
  out["matmul alone"] = op_times(fn, *args)
  print(json.dumps(out))


def traces():
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + TRACE_FLAG).strip())
  proc = subprocess.run(
    [sys.executable, __file__, "--child", "trace"], env=env, capture_output=True, text=True
  )
  if proc.returncode:
    raise RuntimeError(f"the trace process failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def kind(name, count, T):
  """The op's category: in the time loop (runs T times) or not, matmul or not."""
  loop = count >= T
  if name.startswith(("ynn_fusion", "xnn_fusion", "dot", "onednn")):
    return "recurrent matmul (in the loop)" if loop else "hoisted matmuls (all T·B rows)"
  return "elementwise and copies in the loop" if loop else "elementwise and copies outside"


def breakdown(ops_by_run):
  """Per-op traces summed by category, beside untraced totals."""
  T = MEDIUM[1]
  out = {}
  for name, what, fn, p, xs in medium_runs():
    key = f"{name} {what}"
    cats = collections.Counter()
    for op, (t, n) in ops_by_run[key].items():
      cats[kind(op, n, T)] += t
    top = sorted(ops_by_run[key].items(), key=lambda kv: -kv[1][0])[:6]
    out[key] = dict(
      total_ms=ms(fn, p, xs),
      traced_ms=sum(cats.values()),
      categories=dict(cats),
      top=[dict(op=k, ms=t, count=n) for k, (t, n) in top],
    )
    print(f"{key}: {out[key]['total_ms']:.2f} ms  {dict(cats)}", flush=True)
  return out


def recurrent_matmul(ops_by_run):
  """µs per step of the LSTM's recurrent matmul: alone in a loop, and in the LSTM."""
  B, T, _, H = MEDIUM

  def per_step(ops):
    t = sum(t for k, (t, n) in ops.items() if kind(k, n, T).startswith("recurrent"))
    return 1e3 * t / T

  flop = 2 * B * H * 4 * H
  out = {"alone": per_step(ops_by_run["matmul alone"])}
  out["in the LSTM's forward"] = per_step(ops_by_run["lstm fwd"])
  out["in the LSTM's fwd+bwd (both directions)"] = per_step(ops_by_run["lstm fwd+bwd"]) / 2
  out = {k: dict(us=v, gflops=flop / (v * 1e-6) / 1e9 if v else None) for k, v in out.items()}
  print(f"recurrent matmul: {out}", flush=True)
  return out


# ----------------------------------------------------------------- ablations
def step_inputs():
  """Forward at the medium shape: how each step reads its input."""
  B, T, I, H = MEDIUM
  zx = jax.random.normal(jax.random.key(1), (T, B, 4 * H))
  w_h = jax.random.normal(jax.random.key(2), (H, 4 * H)) * H**-0.5
  zero = jnp.zeros((B, H))

  def lstm(scan, one_sigma):
    def run(zx, w_h):
      def body(carry, z):
        h, c = carry
        z = z + h @ w_h
        if one_sigma:
          s = jax.nn.sigmoid(z)
          i, f, o = s[:, :H], s[:, H : 2 * H], s[:, 3 * H :]
        else:
          i, f, o = (jax.nn.sigmoid(z[:, k * H : (k + 1) * H]) for k in (0, 1, 3))
        c = f * c + i * jnp.tanh(z[:, 2 * H : 3 * H])
        h = o * jnp.tanh(c)
        return (h, c), h

      return scan(body, (zero, zero), zx)[1]

    return ms(jax.jit(run), zx, w_h)

  gru = make_cell("gru", H)
  p = gru.init(jax.random.key(0), I)
  gzx = gru.project(p, jax.random.normal(jax.random.key(1), (T, B, I)))

  def gru_run(scan):
    def run(p, zx):
      def body(h, z):
        h, _ = gru.fast_step(p, h, z)
        return h, h

      return scan(body, zero, zx)[1]

    return ms(jax.jit(run), p, gzx)

  out = {
    "LSTM, lax.scan, σ of each gate's slice": lstm(lax.scan, False),
    "LSTM, lax.scan, one σ over [B, 4H]": lstm(lax.scan, True),
    "LSTM, kernel scan, σ of each gate's slice": lstm(kernel.scan, False),
    "GRU step (rj.gru, reset after), lax.scan": gru_run(lax.scan),
    "GRU step (rj.gru, reset after), kernel scan": gru_run(kernel.scan),
  }
  print(f"step inputs: {out}", flush=True)
  return out


def _allocator_child(tuned):
  if tuned:
    rj.host.tune_host_allocator()
  (_, _, fwd, p, xs), (_, _, grad, _, _) = medium_runs()[:2]  # the LSTM's
  print(json.dumps(dict(fwd_ms=ms(fwd, p, xs), fwdbwd_ms=ms(grad, p, xs))))


def allocator(reps=2):
  out = {"plain": [], "tuned": []}
  for _ in range(reps):  # alternated, so drift in the machine's load hits both
    for which in ("plain", "tuned"):
      proc = subprocess.run(
        [sys.executable, __file__, "--child", which], capture_output=True, text=True, check=True
      )
      out[which].append(json.loads(proc.stdout.strip().splitlines()[-1]))
  print(f"allocator: {out}", flush=True)
  return out


def unroll():
  rows = []
  for shape, (B, T, I, H) in SHAPES.items():
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    for name in ("lstm", "gru"):
      cell = make_cell(name, H)
      p = cell.init(jax.random.key(0), I)
      row = dict(shape=shape, cell=name)
      for u in (1, 2, 4):
        fwd, grad = functions(cell, u)
        row[f"u{u}"] = (ms(fwd, p, xs), ms(grad, p, xs))
      rows.append(row)
      print(f"unroll {shape} {name}: {row}", flush=True)
  return rows


# ----------------------------------------------------------------- report
def markdown(info, bd, steps, alloc, mm, unr):
  B, T, I, H = MEDIUM
  L = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']}, "
    f"jax {info['jax']}; host allocator tuned (`rnnjax.host.tune_host_allocator`) except in the "
    "allocator table. Command: `python benchmarks/profile_kernels.py`.",
    "",
    f"## Per-op time at the medium shape (B,T,I,H) = ({B},{T},{I},{H})",
    "",
    "Total: the median call without trace events. The categories: summed `jax.profiler` "
    "trace events of XLA's CPU ops (ms per call, in a process with the events on; their sum "
    f"is the traced column). An op that runs {T} times per call is in the time loop.",
    "",
    "| computation | total ms | traced ms | recurrent matmul | hoisted matmuls | "
    "elementwise in loop | outside the loop | largest ops (ms × count) |",
    "|---|---:|---:|---:|---:|---:|---:|---|",
  ]
  for key, r in bd.items():
    c = r["categories"]
    top = ", ".join(f"{t['op']} {t['ms']:.2f}×{t['count']}" for t in r["top"][:4])
    L.append(
      f"| {key} | {r['total_ms']:.2f} | {r['traced_ms']:.2f} | "
      f"{c.get('recurrent matmul (in the loop)', 0):.2f} | "
      f"{c.get('hoisted matmuls (all T·B rows)', 0):.2f} | "
      f"{c.get('elementwise and copies in the loop', 0):.2f} | "
      f"{c.get('elementwise and copies outside', 0):.2f} | {top} |"
    )
  L += [
    "",
    "## How each step reads its input (forward, medium shape)",
    "",
    "| scan | ms |",
    "|---|---:|",
  ]
  L += [f"| {k} | {v:.2f} |" for k, v in steps.items()]
  L += [
    "",
    "## Host allocator (rnnjax LSTM, medium shape, fresh processes, alternated)",
    "",
    "| allocator | fwd ms | fwd+bwd ms |",
    "|---|---|---|",
  ]
  for k, runs in alloc.items():
    f = ", ".join(f"{r['fwd_ms']:.2f}" for r in runs)
    b = ", ".join(f"{r['fwdbwd_ms']:.2f}" for r in runs)
    L.append(f"| {k} | {f} | {b} |")
  L += [
    "",
    f"## Recurrent matmul [{B},{H}] × [{H},{4 * H}] per step (traced)",
    "",
    "| where | µs per step | GFLOP/s |",
    "|---|---:|---:|",
  ]
  L += [f"| {k} | {v['us']:.1f} | {v['gflops'] or 0:.0f} |" for k, v in mm.items()]
  L += [
    "",
    "## `rj.scan(..., unroll=u)`: fwd / fwd+bwd ms",
    "",
    "| shape | cell | u=1 | u=2 | u=4 |",
    "|---|---|---:|---:|---:|",
  ]
  for r in unr:
    cells = " | ".join(f"{r[f'u{u}'][0]:.1f} / {r[f'u{u}'][1]:.1f}" for u in (1, 2, 4))
    L.append(f"| {r['shape']} | {r['cell']} | {cells} |")
  return "\n".join(L) + "\n"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  ap.add_argument("--child", choices=("trace", "plain", "tuned"), help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.child == "trace":
    return _trace_child()
  if args.child:
    return _allocator_child(args.child == "tuned")
  alloc = allocator()  # fresh processes first
  rj.host.tune_host_allocator()
  info = machine()
  steps = step_inputs()
  unr = unroll()
  ops = traces()
  bd = breakdown(ops)
  mm = recurrent_matmul(ops)
  args.out.mkdir(parents=True, exist_ok=True)
  tag = info["backend"]
  io.write_json(
    args.out / f"profile_{tag}.json",
    dict(machine=info, breakdown=bd, step_inputs=steps, allocator=alloc, matmul=mm, unroll=unr),
  )
  md = markdown(info, bd, steps, alloc, mm, unr)
  io.atomic_write_text(args.out / f"profile_{tag}.md", md)
  print("\n" + md)


if __name__ == "__main__":
  main()
