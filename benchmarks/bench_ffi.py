"""The C++ CPU kernel (``rj.scan(kernel="ffi")``) against rnnjax's XLA scan and
PyTorch's nn.LSTM / nn.GRU / nn.RNN, float32, forward and forward+backward.

    python benchmarks/bench_ffi.py                 # all cells and shapes, 3 rounds
    python benchmarks/bench_ffi.py --rounds 5 --cells lstm --shapes medium
    python benchmarks/bench_ffi.py --profile       # where the FFI path's time goes

Every implementation runs in this one process, in interleaved rounds (each
implementation once per round, the order rotated every round); the table
reports medians and the spread (min-max) over rounds, and GFLOP/s from the
matmul count ``2·T·B·(I+H)·G·H`` forward, three times that forward+backward
(the gradients with respect to the params and the inputs). Writes
``benchmarks/results/ffi_cpu.{json,md}`` (``--out`` elsewhere), with the
machine, the load average before and after, and the thread settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj
from rnnjax._src import cpu_kernel

SHAPES = {  # B, T, I, H (the three shapes)
  "latency": (1, 1000, 128, 128),
  "medium": (32, 100, 256, 256),
  "large": (128, 50, 512, 512),
}
CELLS = {
  "lstm": (lambda H: rj.lstm(H), 4),
  "gru": (lambda H: rj.gru(H, reset="after"), 3),  # PyTorch's GRU
  "elman": (lambda H: rj.elman(H), 1),
}
MODES = ("fwd", "fwd+bwd")


def gflop(cell: str, mode: str, B: int, T: int, I: int, H: int) -> float:
  G = CELLS[cell][1]
  fwd = 2 * T * B * (I + H) * G * H
  return (fwd if mode == "fwd" else 3 * fwd) / 1e9


def machine() -> dict:
  model = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  flags = ""
  with contextlib.suppress(OSError):
    flags = Path("/proc/cpuinfo").read_text()
  return {
    "cpu": model,
    "cores": os.cpu_count(),
    "avx512": "avx512f" in flags,
    "python": platform.python_version(),
    "jax": jax.__version__,
  }


def jax_impls(cell_name: str, B: int, T: int, I: int, H: int) -> dict:
  cell = CELLS[cell_name][0](H)
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
  out = {}
  for kernel in ("ffi", "xla"):

    def fwd(p, x, kernel=kernel):
      return rj.scan(cell, p, x, kernel=kernel)[1]

    def loss(p, x, kernel=kernel):
      return jnp.sum(rj.scan(cell, p, x, kernel=kernel)[1])

    f = jax.jit(fwd)
    g = jax.jit(jax.grad(loss, (0, 1)))
    out[f"rnnjax {kernel}", "fwd"] = lambda f=f: f(params, xs)
    out[f"rnnjax {kernel}", "fwd+bwd"] = lambda g=g: g(params, xs)
  return out


def torch_impls(cell_name: str, B: int, T: int, I: int, H: int) -> dict:
  import torch

  cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[cell_name]
  m = cls(I, H)
  x = torch.randn(T, B, I, requires_grad=True)

  def fwd():
    with torch.no_grad():
      return m(x)[0]

  def fb():
    m.zero_grad()
    x.grad = None
    m(x)[0].sum().backward()

  return {("torch", "fwd"): fwd, ("torch", "fwd+bwd"): fb}


def block(out):
  return jax.block_until_ready(out) if not hasattr(out, "detach") and out is not None else out


def measure(cells: list[str], shapes: list[str], rounds: int) -> list[dict]:
  rows = []
  for shape in shapes:
    B, T, I, H = SHAPES[shape]
    for cell in cells:
      impls = {**jax_impls(cell, B, T, I, H), **torch_impls(cell, B, T, I, H)}
      for fn in impls.values():  # compile and warm up
        block(fn())
        block(fn())
      times: dict = {k: [] for k in impls}
      keys = list(impls)
      for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
          t0 = time.perf_counter()
          block(impls[k]())
          times[k].append(time.perf_counter() - t0)
      for (impl, mode), ts in times.items():
        med = statistics.median(ts)
        rows.append(
          {
            "shape": shape,
            "B": B,
            "T": T,
            "I": I,
            "H": H,
            "cell": cell,
            "mode": mode,
            "impl": impl,
            "median_ms": med * 1e3,
            "min_ms": min(ts) * 1e3,
            "max_ms": max(ts) * 1e3,
            "gflops": gflop(cell, mode, B, T, I, H) / med,
          }
        )
        print(f"{shape:8s} {cell:6s} {mode:8s} {impl:11s} {med * 1e3:9.1f} ms", flush=True)
  return rows


def _profile_fns(B: int, T: int, I: int, H: int) -> dict:
  """The LSTM's FFI path: the kernel's forward call, forward and backward calls
  (on a precomputed ``zx``), and the whole of ``rj.scan``'s forward+backward."""
  from rnnjax._src.cpu_kernel import STEPS, Config, recurrence, rule_for

  cell = rj.lstm(H)
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
  rule = rule_for(cell)
  assert rule is not None and rule.ffi is not None
  cfg = Config(rule, *STEPS[rule.ffi])
  zx = cell.project(params, xs)
  c0 = (jnp.zeros((B, H)), jnp.zeros((B, H)))
  mask = jnp.ones((T, B), jnp.int32)

  def kernel(z):
    return recurrence(cfg, params.w_h, jnp.zeros((0,)), z, c0, mask)[1]

  kf = jax.jit(kernel)
  kfb = jax.jit(jax.grad(lambda z: jnp.sum(kernel(z))))
  whole = jax.jit(jax.grad(lambda p, x: jnp.sum(rj.scan(cell, p, x, kernel="ffi")[1]), (0, 1)))
  return {
    "kernel fwd": lambda: kf(zx),
    "kernel fwd+bwd": lambda: kfb(zx),
    "whole fwd+bwd": lambda: whole(params, xs),
  }


def profile(shapes: list[str], rounds: int) -> list[dict]:
  """The LSTM's FFI path cut in three: the forward kernel call alone, the
  backward kernel call alone, and the rest (XLA: the input projection, the
  weight and input gradients as matmuls over all T·B rows, copies)."""
  out = []
  for shape in shapes:
    B, T, I, H = SHAPES[shape]
    fns = _profile_fns(B, T, I, H)
    for f in fns.values():
      block(f())
    ts: dict = {k: [] for k in fns}
    for _ in range(rounds):
      for k, f in fns.items():
        t0 = time.perf_counter()
        block(f())
        ts[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in ts.items()}
    gemm = 2 * T * B * H * 4 * H / 1e9  # the recurrent GEMM of one direction
    out.append(
      {
        "shape": shape,
        "whole_ms": med["whole fwd+bwd"],
        "kernel_fwd_ms": med["kernel fwd"],
        "kernel_bwd_ms": med["kernel fwd+bwd"] - med["kernel fwd"],
        "xla_rest_ms": med["whole fwd+bwd"] - med["kernel fwd+bwd"],
        "kernel_fwd_gflops": gemm / med["kernel fwd"] * 1e3,
      }
    )
    print(out[-1], flush=True)
  return out


def markdown(info: dict, rows: list[dict], prof: list[dict]) -> str:
  lines = [
    "# The C++ CPU kernel against the XLA scan and PyTorch (float32)",
    "",
    f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores "
    f"(AVX-512: {info['machine']['avx512']}); jax {info['machine']['jax']}, "
    f"torch {info['torch']}; torch threads {info['torch_threads']}; "
    f"RNNJAX_FFI_THREADS={info['ffi_threads'] or 'unset'}. Load average "
    f"{info['load_before']:.1f} before, {info['load_after']:.1f} after (a shared machine: "
    f"absolute times are inflated and noisy; compare within a row). "
    f"Medians of {info['rounds']} interleaved rounds in one process; spread min-max.",
    "",
    "Ratio: the fastest other implementation's median over the FFI kernel's (above 1: the "
    "kernel is faster).",
    "",
    "| cell | shape (B, T, I=H) | mode | rnnjax ffi ms (GFLOP/s) | rnnjax xla ms | torch ms "
    "| vs torch | vs xla |",
    "|---|---|---|---:|---:|---:|---:|---:|",
  ]
  key = {(r["cell"], r["shape"], r["mode"], r["impl"]): r for r in rows}
  for cell in CELLS:
    for shape, (B, T, _, H) in SHAPES.items():
      for mode in MODES:
        got = [key.get((cell, shape, mode, i)) for i in ("rnnjax ffi", "rnnjax xla", "torch")]
        if any(g is None for g in got):
          continue
        ffi, xla, tor = got

        def cellfmt(r):
          return f"{r['median_ms']:.1f} ({r['min_ms']:.1f}–{r['max_ms']:.1f})"

        lines.append(
          f"| {cell} | {shape} ({B}, {T}, {H}) | {mode} | {cellfmt(ffi)} "
          f"({ffi['gflops']:.0f}) | {cellfmt(xla)} | {cellfmt(tor)} "
          f"| {tor['median_ms'] / ffi['median_ms']:.2f}× "
          f"| {xla['median_ms'] / ffi['median_ms']:.2f}× |"
        )
  if prof:
    lines += [
      "",
      "## Where the LSTM's forward+backward time goes (FFI path)",
      "",
      "| shape | whole ms | forward kernel ms (GEMM GFLOP/s) | backward kernel ms | XLA rest ms |",
      "|---|---:|---:|---:|---:|",
    ]
    for p in prof:
      lines.append(
        f"| {p['shape']} | {p['whole_ms']:.1f} | {p['kernel_fwd_ms']:.1f} "
        f"({p['kernel_fwd_gflops']:.0f}) | {p['kernel_bwd_ms']:.1f} | {p['xla_rest_ms']:.1f} |"
      )
  return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
  ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
  ap.add_argument("--profile", action="store_true", help="also cut the LSTM's time in parts")
  ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ffi_cpu"))
  ap.add_argument(
    "--merge", action="store_true", help="keep the stored rows of the cells and shapes not run"
  )
  args = ap.parse_args(argv)
  if not cpu_kernel.available():
    print(f"the FFI kernel cannot run: {cpu_kernel.unavailable_reason()}", file=sys.stderr)
    return 1
  import torch

  load_before = os.getloadavg()[0]
  rows = measure(args.cells, args.shapes, args.rounds)
  prof = profile(args.shapes, args.rounds) if args.profile else []
  info = {
    "machine": machine(),
    "torch": torch.__version__,
    "torch_threads": torch.get_num_threads(),
    "ffi_threads": os.environ.get("RNNJAX_FFI_THREADS", ""),
    "rounds": args.rounds,
    "load_before": load_before,
    "load_after": os.getloadavg()[0],
  }
  out = Path(args.out)
  if args.merge and out.with_suffix(".json").exists():
    old = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    ran = {(r["cell"], r["shape"]) for r in rows}
    rows = [r for r in old["rows"] if (r["cell"], r["shape"]) not in ran] + rows
    shapes = {p["shape"] for p in prof}
    prof = [p for p in old.get("profile", []) if p["shape"] not in shapes] + prof
    info["load_before"] = max(info["load_before"], old["load_before"])
    info["load_after"] = max(info["load_after"], old["load_after"])
  write_atomic(
    out.with_suffix(".json"), json.dumps({**info, "rows": rows, "profile": prof}, indent=1)
  )
  write_atomic(out.with_suffix(".md"), markdown(info, rows, prof))
  print(markdown(info, rows, prof))
  return 0


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  sys.exit(main())
