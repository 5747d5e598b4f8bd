"""How fast are rnnjax's scan kernels against their peers, on the same shapes?

Times forward and forward+backward (grad of sum(ys²) w.r.t. params and xs) of
LSTM, GRU (reset after the matmul, as the peers) and Elman (tanh) layers in one
process: rnnjax in each backward mode, flax (``nn.RNN`` over ``LSTMCell``,
``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``), equinox (LSTM and GRU; it
has no vanilla cell), haiku (``dynamic_unroll``), PyTorch
(``nn.LSTM``/``nn.GRU``/``nn.RNN``) when installed, and on a GPU
jax.experimental.rnn's cuDNN LSTM. The host allocator is tuned
(`rnnjax.tune_host_allocator`) for every implementation unless
``--plain-allocator``. Medians after warm-up; GFLOP/s from
the analytic count; the fraction of this machine's measured matmul rate;
compile time; and XLA's compiled peak temporary memory. Writes JSON and a
markdown table to ``--out`` (default ``benchmarks/results``).

    python benchmarks/bench_kernels.py               # all shapes
    python benchmarks/bench_kernels.py --shapes medium --cells lstm
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnjax as rj
from rnnjax.apps import io

# ----------------------------------------------------------------- configuration
SHAPES = {  # name: (B, T, I, H)
  "latency": (1, 1000, 128, 128),
  "medium": (32, 100, 256, 256),
  "large": (128, 50, 512, 512),
}
LONG = (16, 10_000, 256, 256)  # memory only: peak temporaries of fwd+bwd
CELLS = ("lstm", "gru", "elman")
MIN_REPS, MAX_REPS, TARGET_SECONDS = 5, 30, 3.0
GATES = {"lstm": 4, "gru": 3, "elman": 1}
TORCH_NAMES = {"lstm": "LSTM", "gru": "GRU", "elman": "RNN"}


# ----------------------------------------------------------------- timing
def _time(fn, *args, block=jax.block_until_ready, target=TARGET_SECONDS):
  """(compile_or_first_call_s, median_s) after one warm-up call: at least MIN_REPS
  calls, more up to ``target`` seconds or MAX_REPS."""
  t0 = time.perf_counter()
  block(fn(*args))
  first = time.perf_counter() - t0
  times = []
  while len(times) < MIN_REPS or (sum(times) < target and len(times) < MAX_REPS):
    t0 = time.perf_counter()
    block(fn(*args))
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  return max(first - med, 0.0), med


def _peak_bytes(fn, *args):
  try:
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(m.temp_size_in_bytes)
  except Exception:  # backends without memory analysis
    return None


def matmul_rate():
  """This machine's XLA matmul rate (GFLOP/s) on a [4096, 512] x [512, 2048] product."""
  a = jax.random.normal(jax.random.key(0), (4096, 512))
  b = jax.random.normal(jax.random.key(1), (512, 2048))
  _, t = _time(jax.jit(jnp.matmul), a, b)
  return 2 * 4096 * 512 * 2048 / t / 1e9


def flops(cell, B, T, I, H):
  """Forward FLOPs of the matmuls; forward+backward is 3x."""
  return 2 * T * B * (I + H) * GATES[cell] * H


# ----------------------------------------------------------------- implementations
def rnnjax_cell(cell_name, H):
  """The rnnjax cell with the peers' math (the GRU: reset after the matmul)."""
  return {"lstm": rj.lstm, "gru": lambda H: rj.gru(H, reset="after"), "elman": rj.elman}[cell_name](
    H
  )


def rnnjax_impls(cell_name, I, H):
  cell = rnnjax_cell(cell_name, H)
  params = cell.init(jax.random.key(0), I)
  out = {}
  for mode in ("bptt", "autodiff", "checkpoint"):

    def f(p, x, mode=mode):
      return rj.scan(cell, p, x, backward=mode)[1]

    out[f"rnnjax {mode}"] = (f, params)
  return out


def flax_impls(cell_name, I, H):
  import flax.linen as nn

  classes = {
    "lstm": [nn.LSTMCell, nn.OptimizedLSTMCell],
    "gru": [nn.GRUCell],
    "elman": [nn.SimpleCell],
  }[cell_name]
  out = {}
  for cls in classes:
    layer = nn.RNN(cls(features=H), time_major=True)
    params = layer.init(jax.random.key(0), jnp.zeros((2, 1, I)))
    out[f"flax {cls.__name__}"] = (lambda p, x, layer=layer: layer.apply(p, x), params)
  return out


def equinox_impls(cell_name, I, H):
  try:
    import equinox as eqx
  except ImportError:
    return {}
  if cell_name == "elman":  # equinox has no vanilla RNN cell
    return {}
  cls = eqx.nn.LSTMCell if cell_name == "lstm" else eqx.nn.GRUCell
  model = cls(I, H, key=jax.random.key(0))

  def run(m, xs):
    B = xs.shape[1]
    h0 = jnp.zeros((B, H))
    c0 = (h0, h0) if cell_name == "lstm" else h0

    def step(c, x):
      n = jax.vmap(m)(x, c)
      return n, (n[0] if cell_name == "lstm" else n)

    return jax.lax.scan(step, c0, xs)[1]

  return {"equinox": (run, model)}


def haiku_impls(cell_name, I, H):
  try:
    import haiku as hk
  except ImportError:
    return {}

  def fwd(xs):
    core = {"lstm": hk.LSTM, "gru": hk.GRU, "elman": hk.VanillaRNN}[cell_name](H)
    ys, _ = hk.dynamic_unroll(core, xs, core.initial_state(xs.shape[1]), time_major=True)
    return ys

  t = hk.without_apply_rng(hk.transform(fwd))
  params = t.init(jax.random.key(0), jnp.zeros((2, 1, I)))
  return {"haiku dynamic_unroll": (t.apply, params)}


def cudnn_impls(cell_name, I, H):
  if cell_name != "lstm" or jax.default_backend() != "gpu":
    return {}
  from jax.experimental import rnn as jrnn

  W = jrnn.init_lstm_weight(jax.random.key(0), I, H, 1, False)

  def run(w, xs):
    xb = jnp.swapaxes(xs, 0, 1)  # cuDNN wants [B, T, I]
    B, T = xb.shape[:2]
    h0 = jnp.zeros((1, B, H))
    c0 = jnp.zeros((1, B, H))
    ys, _, _ = jrnn.lstm(
      xb,
      h0,
      c0,
      w,
      jnp.full((B,), T, jnp.int32),
      input_size=I,
      hidden_size=H,
      num_layers=1,
      dropout=0.0,
      bidirectional=False,
    )
    return jnp.swapaxes(ys, 0, 1)

  return {"jax.experimental.rnn cuDNN": (run, W)}


def _compile(fn, *args):
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def jax_prepare(fn, params, xs):
  """Compile the forward and fwd+bwd once (timed); returns (timer, facts)."""

  def loss(p, x):
    return jnp.sum(fn(p, x) ** 2)

  fwd, _ = _compile(fn, params, xs)
  fb, compile_s = _compile(jax.grad(loss, argnums=(0, 1)), params, xs)
  try:
    peak = fb.memory_analysis().temp_size_in_bytes / 2**20
  except Exception:  # backends without memory analysis
    peak = None

  def timer(target):
    return _time(fwd, params, xs, target=target)[1], _time(fb, params, xs, target=target)[1]

  return timer, dict(compile_s=compile_s, peak_mb=peak)


def torch_prepare(cell_name, B, T, I, H):
  """PyTorch's layer, or None without torch; returns (timer, facts)."""
  try:
    import torch
  except ImportError:
    return None
  torch.manual_seed(0)
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  m = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[cell_name](I, H).to(dev)
  x = torch.randn(T, B, I, device=dev, requires_grad=True)
  sync = (lambda _: torch.cuda.synchronize()) if dev == "cuda" else (lambda _: None)

  def fwd():
    with torch.no_grad():
      return m(x)[0]

  def fb():
    m.zero_grad()
    x.grad = None
    y, _ = m(x)
    (y**2).sum().backward()
    return y

  def timer(target):
    return _time(fwd, block=sync, target=target)[1], _time(fb, block=sync, target=target)[1]

  return timer, dict(compile_s=0.0, peak_mb=None, threads=torch.get_num_threads())


# ----------------------------------------------------------------- main
def machine():
  dev = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return dict(
    backend=jax.default_backend(),
    device=getattr(dev, "device_kind", str(dev)),
    cpu=cpu,
    cores=os.cpu_count(),
    jax=jax.__version__,
    python=platform.python_version(),
  )


def long_memory(cell_name):
  B, T, I, H = LONG
  cell = rnnjax_cell(cell_name, H)
  p = cell.init(jax.random.key(0), I)
  xs = jax.ShapeDtypeStruct((T, B, I), jnp.float32)
  out = {}
  for mode in ("autodiff", "bptt", "checkpoint"):

    def loss(p, x, mode=mode):
      return jnp.sum(rj.scan(cell, p, x, backward=mode)[1] ** 2)

    g = jax.grad(loss, argnums=(0, 1))
    b = _peak_bytes(g, p, xs)
    out[mode] = None if b is None else b / 2**20
  return out


def measure_rounds(prepared, rounds, target=1.0):
  """{name: facts + fwd_ms, fwdbwd_ms (medians over rounds) + rounds}: every
  implementation timed once a round, the order rotated each round, so that the
  machine's drift falls on all of them alike."""
  names = list(prepared)
  per = {name: [] for name in names}
  for k in range(rounds):
    for name in names[k % len(names) :] + names[: k % len(names)]:
      t_f, t_b = prepared[name][0](target)
      per[name].append(dict(fwd_ms=t_f * 1e3, fwdbwd_ms=t_b * 1e3))
  out = {}
  for name in names:
    rs = per[name]
    out[name] = dict(
      prepared[name][1],
      fwd_ms=statistics.median(r["fwd_ms"] for r in rs),
      fwdbwd_ms=statistics.median(r["fwdbwd_ms"] for r in rs),
      rounds=rs,
    )
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
  ap.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
  ap.add_argument("--no-long", action="store_true", help="skip the long-sequence memory table")
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  ap.add_argument(
    "--rounds",
    type=int,
    default=3,
    help="time every implementation once per round, in a rotated order; report the median "
    "over rounds and the range of rnnjax's ratios (default 3)",
  )
  ap.add_argument(
    "--plain-allocator",
    action="store_true",
    help="leave glibc's allocator as it is (default: rj.host.tune_host_allocator(), every peer)",
  )
  args = ap.parse_args(argv)

  # before JAX starts its threads, which keep the heap they first allocate from
  tuned = not args.plain_allocator and rj.host.tune_host_allocator()
  info = machine()
  info["host_allocator"] = "tuned" if tuned else "plain"
  info["matmul_gflops"] = matmul_rate()
  info["rounds"] = args.rounds
  print(f"machine: {info}", flush=True)
  rows = []
  for shape in args.shapes:
    B, T, I, H = SHAPES[shape]
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    for cell_name in args.cells:
      impls = {}
      for make in (rnnjax_impls, flax_impls, equinox_impls, haiku_impls, cudnn_impls):
        impls.update(make(cell_name, I, H))
      prepared = {name: jax_prepare(fn, p, xs) for name, (fn, p) in impls.items()}
      t = torch_prepare(cell_name, B, T, I, H)
      if t:
        prepared[f"torch nn.{TORCH_NAMES[cell_name]}"] = t
      results = measure_rounds(prepared, args.rounds)
      fl = flops(cell_name, B, T, I, H)
      peers = {k: v for k, v in results.items() if not k.startswith("rnnjax")}
      best_peer = min(peers, key=lambda k: peers[k]["fwdbwd_ms"]) if peers else None
      best_fwd = min(peers, key=lambda k: peers[k]["fwd_ms"]) if peers else None
      for name, r in results.items():
        r.update(
          shape=shape,
          cell=cell_name,
          impl=name,
          B=B,
          T=T,
          I=I,
          H=H,
          gflops=3 * fl / (r["fwdbwd_ms"] / 1e3) / 1e9,
        )
        r["matmul_fraction"] = r["gflops"] / info["matmul_gflops"]
        if best_peer:
          r["speedup_vs_best_peer"] = results[best_peer]["fwdbwd_ms"] / r["fwdbwd_ms"]
          r["best_peer"] = best_peer
          r["fwd_speedup_vs_best_peer"] = results[best_fwd]["fwd_ms"] / r["fwd_ms"]
          r["best_fwd_peer"] = best_fwd
          per_round = [  # the ratio within each round, against this best peer
            (b["fwdbwd_ms"] / a["fwdbwd_ms"], f["fwd_ms"] / a["fwd_ms"])
            for a, b, f in zip(
              r["rounds"], results[best_peer]["rounds"], results[best_fwd]["rounds"], strict=True
            )
          ]
          r["speedup_range"] = [min(x for x, _ in per_round), max(x for x, _ in per_round)]
          r["fwd_speedup_range"] = [min(y for _, y in per_round), max(y for _, y in per_round)]
        rows.append(r)
        print(
          f"{shape:8s} {cell_name:5s} {name:28s} fwd {r['fwd_ms']:9.2f} ms  "
          f"fwd+bwd {r['fwdbwd_ms']:9.2f} ms  {r['gflops']:6.1f} GFLOP/s  "
          f"x{r.get('speedup_vs_best_peer', float('nan')):.2f} vs {best_peer}, "
          f"fwd x{r.get('fwd_speedup_vs_best_peer', float('nan')):.2f} vs {best_fwd}",
          flush=True,
        )
      args.out.mkdir(parents=True, exist_ok=True)  # partial results as we go
      io.write_json(args.out / f"kernels_{info['backend']}.json", dict(machine=info, rows=rows))
  long = {} if args.no_long else {c: long_memory(c) for c in args.cells}
  for c, m in long.items():
    print(f"long {LONG} {c}: peak MiB {m}", flush=True)

  args.out.mkdir(parents=True, exist_ok=True)
  tag = f"{info['backend']}"
  io.write_json(args.out / f"kernels_{tag}.json", dict(machine=info, rows=rows, long=long))
  md = markdown(info, rows, long)
  io.atomic_write_text(args.out / f"kernels_{tag}.md", md)
  print("\n" + md)


def markdown(info, rows, long):
  lines = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} "
    f"({info['device']}), jax {info['jax']}; measured XLA matmul rate "
    f"{info['matmul_gflops']:.0f} GFLOP/s; host allocator "
    f"{info.get('host_allocator', 'plain')} (`rnnjax.host.tune_host_allocator`, the same for every "
    "implementation). Speed-ups are against the fastest peer (not rnnjax) of the same shape "
    f"and cell, fwd+bwd and forward alone; times are medians over {info.get('rounds', 1)} "
    "rounds (every implementation once a round, in a rotated order), and the range is the "
    "ratio's lowest and highest over the rounds.",
    "",
    "| shape (B,T,I,H) | cell | implementation | fwd ms | fwd+bwd ms | GFLOP/s | "
    "of matmul rate | compile s | peak MiB | speed-up vs best peer | fwd speed-up | "
    "range over rounds (fwd+bwd; fwd) |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ]
  for r in rows:
    peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
    sp = r.get("speedup_vs_best_peer")
    fsp = r.get("fwd_speedup_vs_best_peer")
    rng = ""
    if "speedup_range" in r and r["impl"] != r["best_peer"]:
      (a, b), (c, d) = r["speedup_range"], r["fwd_speedup_range"]
      rng = f"{a:.2f}–{b:.2f}; {c:.2f}–{d:.2f}"
    lines.append(
      f"| {r['shape']} ({r['B']},{r['T']},{r['I']},{r['H']}) | {r['cell']} | {r['impl']} | "
      f"{r['fwd_ms']:.2f} | {r['fwdbwd_ms']:.2f} | {r['gflops']:.1f} | "
      f"{100 * r['matmul_fraction']:.0f}% | {r['compile_s']:.2f} | {peak} | "
      f"{'' if sp is None else f'{sp:.2f}x'} | {'' if fsp is None else f'{fsp:.2f}x'} | {rng} |"
    )
  if long:
    B, T, I, H = LONG
    lines += [
      "",
      f"Long sequence (B={B}, T={T}, I={I}, H={H}), XLA peak temporary memory of fwd+bwd:",
      "",
      "| cell | autodiff MiB | bptt MiB | checkpoint MiB | checkpoint / autodiff |",
      "|---|---:|---:|---:|---:|",
    ]
    for c, m in long.items():
      ratio = (m["checkpoint"] / m["autodiff"]) if m["autodiff"] else float("nan")
      lines.append(
        f"| {c} | {m['autodiff']:.0f} | {m['bptt']:.0f} | {m['checkpoint']:.0f} | "
        f"{100 * ratio:.0f}% |"
      )
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
