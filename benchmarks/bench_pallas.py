"""Where does the Pallas persistent-RNN kernel beat the XLA scan? (GPU only)

One prepared run for a GPU machine. First it checks, on the GPU, that
``rj.scan(kernel="pallas")`` equals ``kernel="xla"`` (values and gradients, with
lengths and reverse, a hidden size that needs padding) for every supported
cell. Then it times forward and forward+backward (grad of ``sum(ys²)`` for
params and xs) at latency-bound shapes (small B, H <= 512):

* ``pallas``: ``rj.scan(kernel="pallas")``, w_h resident or re-read per step
  by the default rule (`pallas_rnn.RESIDENT_BYTES`), and the other choice too
  (``pallas resident`` / ``pallas streamed``) where w_h is at most 256 KiB;
* ``xla``: ``rj.scan(kernel="xla")``, the hand-written BPTT;
* ``jax.experimental.rnn cuDNN`` (LSTM, float32) and ``torch nn.LSTM/nn.GRU``
  (cuDNN) when torch is installed.

Float32 rows use each library's default matmul precision (TF32 in Triton and
cuDNN); bfloat16 rows use ``rj.lstm(H, dtype=jnp.bfloat16)`` (f32 accumulation).
Medians after a warm-up. Writes ``pallas_<device>.json`` and ``.md`` naming the
card to ``--out`` (default ``benchmarks/results``), and prints the shapes where
Pallas won both ways: the entries for `pallas_rnn.AUTO_WINS`.

    python3 benchmarks/bench_pallas.py               # about 4 minutes on an H100
    python3 benchmarks/bench_pallas.py --quick       # the latency shape only

Without a GPU it says so and exits with status 0 (interpret mode is no timing).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import _time, cudnn_impls, env_settings, machine  # the same timer, peer

import rnnjax as rj
from rnnjax._src import pallas_rnn
from rnnjax.apps import io

# ----------------------------------------------------------------- configuration
SHAPES = {  # name: (B, T, I, H)
  "latency": (1, 1000, 128, 128),
  "h64": (1, 1000, 64, 64),
  "b16": (16, 500, 256, 256),
  "h512": (4, 300, 512, 512),
}
RUNS = [  # (cell, dtype): the LSTM first, it is the priority
  ("lstm", "float32"),
  ("lstm", "bfloat16"),
  ("gru", "float32"),
  ("gru", "bfloat16"),
]
SMOKE_SHAPES = {"tiny": (2, 6, 4, 8)}  # --smoke: any backend, interpret mode off a GPU
SMOKE_CHECK = (5, 3, 3, 8)
SMOKE_RUNS = [("gru", "bfloat16")]  # the check above runs the LSTM in float32
CHECK = (50, 3, 20, 48)  # T, B, I, H of the on-GPU correctness check (H pads to 64)
CHECK_TOL = {"float32": 2e-2}  # ‖Δ‖/‖ref‖; TF32 matmuls on both sides
RESIDENT_MAX = 256 * 1024  # bytes of w_h up to which both residency choices are timed
BUDGET_S = 480.0  # stop starting new shapes after this many seconds


def make_cell(name, H, dtype):
  dt = None if dtype == "float32" else jnp.dtype(dtype)
  return rj.lstm(H, dtype=dt) if name == "lstm" else rj.gru(H, reset="after", dtype=dt)


# ----------------------------------------------------------------- correctness on the GPU
def rel_err(a, b):
  """max over leaves of ‖a − b‖ / ‖b‖ (float64 on the host)."""
  errs = []
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    errs.append(float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30)))
  return max(errs)


def check_all(dims=CHECK, only=None, plain_only=False):
  """Pallas against XLA on the GPU, every supported cell (or those named in
  ``only``), lengths and reverse (unless ``plain_only``)."""
  T, B, I, H = dims
  cells = {
    "lstm": rj.lstm(H),
    "gru-before": rj.gru(H),
    "gru-after": rj.gru(H, reset="after"),
    "elman": rj.elman(H),
  }
  cells = {k: v for k, v in cells.items() if only is None or k in only}
  lengths = jnp.array([T, T // 2, 1])
  rows = []
  for i, (name, cell) in enumerate(cells.items()):
    k1, k2, k3 = jax.random.split(jax.random.key(100 + i), 3)
    params = cell.init(k1, I)
    xs = jax.random.normal(k2, (T, B, I))
    carry0 = jax.tree.map(
      lambda c, k=k3: 0.3 * jax.random.normal(k, c.shape), cell.initial_carry((B,))
    )
    for opts in ({},) if plain_only else ({}, {"lengths": lengths, "reverse": True}):

      def loss(p, x, c0, kernel, cell=cell, opts=opts):
        carry, ys = rj.scan(cell, p, x, c0, kernel=kernel, **opts)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c * c) for c in jax.tree.leaves(carry)), (
          carry,
          ys,
        )

      row = dict(cell=name, options="lengths+reverse" if opts else "plain")
      try:
        out = {}
        for kernel in ("pallas", "xla"):
          f = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True), static_argnums=3)
          (_, vals), grads = f(params, xs, carry0, kernel)
          out[kernel] = (vals, grads)
        row["values_rel_err"] = rel_err(out["pallas"][0], out["xla"][0])
        row["grads_rel_err"] = rel_err(out["pallas"][1], out["xla"][1])
        row["ok"] = max(row["values_rel_err"], row["grads_rel_err"]) < CHECK_TOL["float32"]
      except Exception as e:  # a lowering or compile failure is a result too
        row["error"] = _first_line(e)
        row["ok"] = False
        traceback.print_exc()
      rows.append(row)
      print(f"check {row}", flush=True)
  return rows


# ----------------------------------------------------------------- implementations
def jax_impls(cell_name, dtype, B, I, H):
  cell = make_cell(cell_name, H, dtype)
  params = cell.init(jax.random.key(0), I)
  cdt = jnp.float32 if dtype == "float32" else jnp.dtype(dtype)
  G = cell.gates
  out = {}
  for kernel in ("pallas", "xla"):

    def f(p, x, kernel=kernel):
      return rj.scan(cell, p, x, kernel=kernel)[1]

    out[kernel] = (f, params)
  Hp = pallas_rnn.padded(H)
  w_bytes = Hp * G * Hp * jnp.dtype(cdt).itemsize
  default = w_bytes <= pallas_rnn.RESIDENT_BYTES
  if w_bytes <= RESIDENT_MAX:  # the other residency choice, where it can fit on chip
    other = not default

    def g(p, x, other=other):
      carry0 = cell.initial_carry((x.shape[1],), cdt)
      return pallas_rnn.pallas_scan(cell, p, x, carry0, None, resident=other)[1]

    out["pallas resident" if other else "pallas streamed"] = (g, params)
  if cell_name == "lstm" and dtype == "float32":
    out.update(cudnn_impls("lstm", I, H))  # bench_kernels' cuDNN peer
  return out, ("resident" if default else "streamed")


def jax_measure(fn, params, xs):
  def loss(p, x):
    return jnp.sum(fn(p, x).astype(jnp.float32) ** 2)

  t0 = time.perf_counter()
  fwd = jax.jit(fn).lower(params, xs).compile()
  fb = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
  compile_s = time.perf_counter() - t0
  _, t_f = _time(fwd, params, xs)
  _, t_b = _time(fb, params, xs)
  return dict(fwd_ms=t_f * 1e3, fwdbwd_ms=t_b * 1e3, compile_s=compile_s)


def torch_measure(cell_name, dtype, B, T, I, H):
  try:
    import torch
  except ImportError:
    return None
  if not torch.cuda.is_available():
    return None
  torch.manual_seed(0)
  tdt = getattr(torch, dtype)
  m = (torch.nn.LSTM if cell_name == "lstm" else torch.nn.GRU)(I, H).to("cuda", tdt)
  x = torch.randn(T, B, I, device="cuda", dtype=tdt, requires_grad=True)

  def sync(_):
    torch.cuda.synchronize()

  def fwd():
    with torch.no_grad():
      return m(x)[0]

  def fb():
    m.zero_grad()
    x.grad = None
    y, _ = m(x)
    (y.float() ** 2).sum().backward()
    return y

  _, t_f = _time(fwd, block=sync)
  _, t_b = _time(fb, block=sync)
  return dict(fwd_ms=t_f * 1e3, fwdbwd_ms=t_b * 1e3, compile_s=0.0)


# ----------------------------------------------------------------- main
def _first_line(e):
  return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"


def device_tag(info):
  return re.sub(r"[^a-z0-9]+", "_", info["device"].lower()).strip("_")


def has_gpu():
  return jax.default_backend() == "gpu"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="the latency shape only")
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  ap.add_argument(
    "--budget", type=float, default=BUDGET_S, help="seconds after which no new shape starts"
  )
  ap.add_argument(
    "--smoke",
    action="store_true",
    help="a dry run at a tiny shape on any backend (Pallas in interpret mode off a GPU): "
    "checks that the script runs, measures nothing worth keeping",
  )
  args = ap.parse_args(argv)

  if not has_gpu() and not args.smoke:
    print(
      f"bench_pallas: no GPU (JAX's backend is {jax.default_backend()!r}); the Pallas "
      f"kernel runs here only in interpret mode, which is no timing. Nothing measured; "
      f"run this script on a GPU machine."
    )
    return 0

  start = time.perf_counter()
  info = machine() | env_settings()
  if args.smoke:
    info["smoke"] = True
  print(f"machine: {info}", flush=True)
  tag = device_tag(info)
  args.out.mkdir(parents=True, exist_ok=True)
  shapes_by_name = SMOKE_SHAPES if args.smoke else SHAPES
  checks = check_all(SMOKE_CHECK, only=("lstm",), plain_only=True) if args.smoke else check_all()
  runs = SMOKE_RUNS if args.smoke else RUNS
  rows = []
  shapes = ["latency"] if args.quick and not args.smoke else list(shapes_by_name)

  def save():
    data = dict(machine=info, checks=checks, rows=rows, auto_wins=auto_wins(rows))
    io.write_json(args.out / f"pallas_{tag}.json", data)
    io.atomic_write_text(args.out / f"pallas_{tag}.md", markdown(info, checks, rows))

  for shape in shapes:
    if rows and time.perf_counter() - start > args.budget:  # one shape at least
      print(f"time budget ({args.budget:.0f} s) spent; skipping {shape}", flush=True)
      continue
    B, T, I, H = shapes_by_name[shape]
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    for cell_name, dtype in runs:
      impls, default = jax_impls(cell_name, dtype, B, I, H)
      results = {}
      for name, (fn, p) in impls.items():
        try:
          results[name] = jax_measure(fn, p, xs)
        except Exception as e:  # a Triton compile failure (registers, shared memory) is a result
          results[name] = dict(error=_first_line(e))
          traceback.print_exc()
      t = torch_measure(cell_name, dtype, B, T, I, H)
      if t:
        results[f"torch nn.{cell_name.upper()}"] = t
      xla = results.get("xla", {}).get("fwdbwd_ms")
      xla_f = results.get("xla", {}).get("fwd_ms")
      for name, r in results.items():
        r.update(shape=shape, B=B, T=T, I=I, H=H, cell=cell_name, dtype=dtype, impl=name)
        if name == "pallas":
          r["resident"] = default
        if "fwd_ms" in r and xla:
          r["fwd_vs_xla"] = xla_f / r["fwd_ms"]
          r["fwdbwd_vs_xla"] = xla / r["fwdbwd_ms"]
          r["us_per_step_fwd"] = 1e3 * r["fwd_ms"] / T
        rows.append(r)
        print(
          f"{shape:8s} {cell_name:4s} {dtype:8s} {name:28s} "
          + (
            f"fwd {r['fwd_ms']:8.3f} ms  fwd+bwd {r['fwdbwd_ms']:8.3f} ms  "
            f"x{r.get('fwdbwd_vs_xla', float('nan')):.2f} vs xla"
            if "fwd_ms" in r
            else r["error"]
          ),
          flush=True,
        )
      save()
  save()
  md = markdown(info, checks, rows)
  print("\n" + md)
  print(f"AUTO_WINS candidates (backend, max B, max H): {auto_wins(rows)}")
  print(f"total {time.perf_counter() - start:.0f} s")
  return 0


def auto_wins(rows):
  """``(backend, B, H)`` where the Pallas kernel (as ``kernel="pallas"`` runs it)
  beat the XLA scan both forward and forward+backward, for every cell and dtype."""
  by_shape = {}
  for r in rows:
    if r["impl"] == "pallas":
      won = r.get("fwd_vs_xla", 0) > 1 and r.get("fwdbwd_vs_xla", 0) > 1
      by_shape.setdefault((r["B"], r["H"]), []).append(won)
  return [("gpu", B, H) for (B, H), won in sorted(by_shape.items()) if all(won)]


def markdown(info, checks, rows):
  lines = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} "
    f"({info['device']}), jax {info['jax']}.",
    "",
    "Correctness on this GPU, `kernel='pallas'` against `kernel='xla'` "
    f"(T, B, I, H = {CHECK}; ‖Δ‖/‖xla‖, tolerance {CHECK_TOL['float32']}):",
    "",
    "| cell | options | values | gradients | ok |",
    "|---|---|---:|---:|---|",
  ]
  for c in checks:
    if "error" in c:
      lines.append(f"| {c['cell']} | {c['options']} | {c['error']} | | no |")
    else:
      lines.append(
        f"| {c['cell']} | {c['options']} | {c['values_rel_err']:.1e} | "
        f"{c['grads_rel_err']:.1e} | {'yes' if c['ok'] else 'NO'} |"
      )
  lines += [
    "",
    "| shape (B,T,I,H) | cell | dtype | implementation | fwd ms | fwd+bwd ms | µs/step fwd | "
    "fwd vs xla | fwd+bwd vs xla | compile s |",
    "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    name = r["impl"] + (f" ({r['resident']})" if "resident" in r else "")
    shape = f"{r['shape']} ({r['B']},{r['T']},{r['I']},{r['H']})"
    head = f"| {shape} | {r['cell']} | {r['dtype']} | {name} |"
    if "error" in r:
      lines.append(f"{head} {r['error']} | | | | | |")
      continue
    fv, bv = r.get("fwd_vs_xla"), r.get("fwdbwd_vs_xla")
    lines.append(
      f"{head} {r['fwd_ms']:.3f} | {r['fwdbwd_ms']:.3f} | {r.get('us_per_step_fwd', 0):.2f} | "
      f"{'' if fv is None else f'{fv:.2f}x'} | {'' if bv is None else f'{bv:.2f}x'} | "
      f"{r['compile_s']:.2f} |"
    )
  lines += ["", f"`AUTO_WINS` candidates: {auto_wins(rows)}"]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.exit(main())
