"""How fast are rnnjax's scan kernels against their peers, and how close to this
machine's limit?

Times forward and forward+backward (grad of sum(ys²) w.r.t. params and xs) of
LSTM, GRU (reset after the matmul, as the peers) and Elman (tanh) layers at
three shapes, two ways:

1. **Same process** (``kernels_cpu.{json,md}``): every implementation in one
   process, interleaved rounds: rnnjax in each backward mode (and ``rnnjax ffi``,
   ``rj.scan(kernel="ffi")``, where that kernel is accepted), flax (``nn.RNN``
   over ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``),
   equinox (LSTM and GRU; it has no vanilla cell), haiku (``dynamic_unroll``),
   PyTorch (``nn.LSTM``/``nn.GRU``/``nn.RNN``) when installed, and on a GPU
   jax.experimental.rnn's cuDNN LSTM. The host allocator is as it is unless
   ``--tuned-allocator`` (then `rnnjax.host.tune_host_allocator` holds for
   every implementation).
2. **Own process** (``--own-process``, ``kernels_cpu_own_process.{json,md}``):
   each implementation in a process of its own in the configuration its library
   recommends (`RECOMMENDED`), the processes alternated call by call (one
   process times while the others wait), medians and the range over rounds.

Beside each time: GFLOP/s from the analytic matmul count, and its fraction of
this machine's GEMM peak, measured in the same run (a 4096² float32 GEMM in JAX
and in PyTorch; the faster is "peak"). The environment settings that change a
CPU timing (thread counts, ``XLA_FLAGS``, ``MALLOC_*``) and the load average
are stored with the figures. Writes JSON and markdown to ``--out`` (default
``benchmarks/results``).

    python benchmarks/bench_kernels.py                  # same process, all shapes
    python benchmarks/bench_kernels.py --own-process    # own processes
    python benchmarks/bench_kernels.py --shapes medium --cells lstm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
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
SMOKE = {"tiny": (2, 6, 4, 8)}  # --shapes tiny: a seconds-long dry run (tests/test_benchmarks.py)
LONG = (16, 10_000, 256, 256)  # memory only: peak temporaries of fwd+bwd
CELLS = ("lstm", "gru", "elman")
MIN_REPS, MAX_REPS, TARGET_SECONDS = 5, 30, 3.0
PEAK_N = 4096  # the GEMM that measures this machine's peak: [N, N] x [N, N] float32
GATES = {"lstm": 4, "gru": 3, "elman": 1}
TORCH_NAMES = {"lstm": "LSTM", "gru": "GRU", "elman": "RNN"}


# ----------------------------------------------------------------- timing
def _time(fn, *args, block=jax.block_until_ready, target=TARGET_SECONDS, min_reps=None):
  """(compile_or_first_call_s, median_s) after one warm-up call: at least
  ``min_reps`` (default MIN_REPS) calls, more up to ``target`` seconds or MAX_REPS."""
  min_reps = MIN_REPS if min_reps is None else min_reps
  t0 = time.perf_counter()
  block(fn(*args))
  first = time.perf_counter() - t0
  times = []
  while len(times) < min_reps or (sum(times) < target and len(times) < MAX_REPS):
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


def gemm_peak(n=PEAK_N, target=1.0):
  """{"jax": GFLOP/s, "torch": GFLOP/s (when installed), "peak": the faster}: a
  float32 [n, n] x [n, n] product, each library with its defaults (medians)."""
  flop = 2 * n**3
  a = jax.random.normal(jax.random.key(0), (n, n))
  b = jax.random.normal(jax.random.key(1), (n, n))
  out = {"jax": flop / _time(jax.jit(jnp.matmul), a, b, target=target, min_reps=3)[1] / 1e9}
  try:
    import torch
  except ImportError:
    pass
  else:
    ta, tb = torch.randn(n, n), torch.randn(n, n)
    out["torch"] = (
      flop / _time(torch.mm, ta, tb, block=lambda _: None, target=target, min_reps=3)[1] / 1e9
    )
  out["peak"] = max(out.values())
  return out


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
  if ffi_available():

    def g(p, x):
      return rj.scan(cell, p, x, kernel="ffi")[1]

    out["rnnjax ffi"] = (g, params)
  return out


def ffi_available():
  """Whether ``rj.scan(kernel="ffi")`` (the C++ CPU kernel) is built and loads here."""
  try:
    from rnnjax._src import cpu_kernel  # type: ignore[attr-defined]

    return bool(cpu_kernel.available())
  except Exception:  # not merged, not built, or fails to load: no row
    return False


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


ENV_VARS = (  # environment settings that change a CPU timing; recorded beside every figure
  "OPENBLAS_NUM_THREADS",
  "OMP_NUM_THREADS",
  "MKL_NUM_THREADS",
  "XLA_FLAGS",
  "MALLOC_ARENA_MAX",
  "MALLOC_MMAP_THRESHOLD_",
  "MALLOC_TRIM_THRESHOLD_",
)


def env_settings():
  """{"env": {VAR: value or "unset"}, "torch": version, "torch_threads": n}: the settings
  that change a CPU timing, to store beside it."""
  out = {"env": {v: os.environ.get(v, "unset") for v in ENV_VARS}}
  try:
    import torch

    out.update(torch=torch.__version__.split("+")[0], torch_threads=torch.get_num_threads())
  except ImportError:
    pass
  return out


def env_line(info):
  """The environment settings of ``info`` (from `env_settings`) as one line of markdown."""
  env = info.get("env", {})
  text = ", ".join(f"{k}={v}" for k, v in env.items())
  if "torch_threads" in info:
    text += f", torch threads {info['torch_threads']}"
  return f"environment: {text}" if text else "environment not recorded"


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


def annotate(results, info, shape, cell_name):
  """Rows from ``{impl: {fwd_ms, fwdbwd_ms, rounds, ...}}``: GFLOP/s and the fraction
  of the GEMM peak both ways, and each one's ratio to the fastest peer (not rnnjax),
  with the range of that ratio over the rounds."""
  B, T, I, H = {**SHAPES, **SMOKE}[shape]
  fl = flops(cell_name, B, T, I, H)
  peak = info["peak_gflops"]
  peers = {k: v for k, v in results.items() if not k.startswith("rnnjax")}
  best_peer = min(peers, key=lambda k: peers[k]["fwdbwd_ms"]) if peers else None
  best_fwd = min(peers, key=lambda k: peers[k]["fwd_ms"]) if peers else None
  rows = []
  for name, r in results.items():
    r.update(shape=shape, cell=cell_name, impl=name, B=B, T=T, I=I, H=H)
    r["fwd_gflops"] = fl / (r["fwd_ms"] / 1e3) / 1e9
    r["gflops"] = 3 * fl / (r["fwdbwd_ms"] / 1e3) / 1e9
    r["fwd_peak_fraction"] = r["fwd_gflops"] / peak
    r["peak_fraction"] = r["gflops"] / peak
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
      f"fwd+bwd {r['fwdbwd_ms']:9.2f} ms  {r['gflops']:6.1f} GFLOP/s "
      f"({100 * r['peak_fraction']:.0f}% of peak)  "
      f"x{r.get('speedup_vs_best_peer', float('nan')):.2f} vs {best_peer}, "
      f"fwd x{r.get('fwd_speedup_vs_best_peer', float('nan')):.2f} vs {best_fwd}",
      flush=True,
    )
  return rows


# ----------------------------------------------------------------- own processes
# Whether rnnjax's recommended configuration includes `rnnjax.host.tune_host_allocator`
# (benchmarks/results/allocator_cpu.md measures what it buys rnnjax and costs torch).
RNNJAX_TUNES_ALLOCATOR = False
RECOMMENDED = {  # library: (its recommended configuration, in words)
  "rnnjax": "rj.scan with its defaults (backward='auto', kernel='auto')",
  "rnnjax ffi": "rj.scan(kernel='ffi')",
  "flax": "flax.linen.RNN over OptimizedLSTMCell (LSTM), GRUCell, SimpleCell",
  "equinox": "lax.scan over eqx.nn.LSTMCell / GRUCell, vmapped over the batch",
  "haiku": "hk.dynamic_unroll over hk.LSTM / hk.GRU / hk.VanillaRNN",
  "torch": "torch.nn.LSTM / GRU / RNN, its default threads",
}


def recommended_prepare(lib, cell_name, shape):
  """(name, timer, facts) of ``lib``'s recommended implementation, or None where it
  has none for this cell (or is not installed)."""
  B, T, I, H = {**SHAPES, **SMOKE}[shape]
  if lib == "torch":
    t = torch_prepare(cell_name, B, T, I, H)
    return None if t is None else (f"torch nn.{TORCH_NAMES[cell_name]}", *t)
  if lib in ("rnnjax", "rnnjax ffi"):
    if lib == "rnnjax ffi" and not ffi_available():
      return None
    cell = rnnjax_cell(cell_name, H)
    kw = {"kernel": "ffi"} if lib == "rnnjax ffi" else {}
    impls = {lib: (lambda p, x: rj.scan(cell, p, x, **kw)[1], cell.init(jax.random.key(0), I))}
  elif lib == "flax":
    impls = flax_impls(cell_name, I, H)
    impls = {k: v for k, v in impls.items() if k != "flax LSTMCell"}  # Optimized for the LSTM
  else:
    impls = {"equinox": equinox_impls, "haiku": haiku_impls}[lib](cell_name, I, H)
  if not impls:
    return None
  (name, (fn, p)), *_ = impls.items()
  xs = jax.random.normal(jax.random.key(1), (T, B, I))
  return (name, *jax_prepare(fn, p, xs))


def worker(lib):
  """One library's process: answers JSON lines on stdin (prepare, time, quit) with
  JSON lines on stdout, prefixed ``@@``."""
  if lib == "rnnjax" and RNNJAX_TUNES_ALLOCATOR:
    rj.host.tune_host_allocator()
  current = None

  def reply(**kw):
    print("@@" + json.dumps(kw), flush=True)

  for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "prepare":
      current = None
      try:
        current = recommended_prepare(lib, msg["cell"], msg["shape"])
      except Exception as e:  # a library that cannot run this case: no row
        print(f"{lib}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
      reply(name=current and current[0], facts=current and current[2])
    elif msg["cmd"] == "time":
      t_f, t_b = current[1](msg["target"])
      reply(fwd_ms=t_f * 1e3, fwdbwd_ms=t_b * 1e3)
    else:
      return


class Worker:
  """A library's own process (`worker`), driven by the parent."""

  def __init__(self, lib):
    self.lib = lib
    self.proc = subprocess.Popen(
      [sys.executable, __file__, "--worker", lib, "--min-reps", str(MIN_REPS)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
    )

  def ask(self, **msg):
    self.proc.stdin.write(json.dumps(msg) + "\n")
    self.proc.stdin.flush()
    for line in self.proc.stdout:
      if line.startswith("@@"):
        return json.loads(line[2:])
    raise RuntimeError(f"the {self.lib} process ended (exit {self.proc.wait()})")

  def close(self):
    with contextlib.suppress(OSError, ValueError):
      self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
      self.proc.stdin.close()
    self.proc.wait(timeout=60)


def own_process(args, info):
  """Every library in its own process, in its recommended configuration; the
  processes timed one at a time, in an order rotated each round."""
  libs = [lib for lib in RECOMMENDED if lib != "rnnjax ffi" or ffi_available()]
  workers = [Worker(lib) for lib in libs]
  rows = []
  try:
    for shape in args.shapes:
      for cell_name in args.cells:
        live = []
        for w in workers:
          r = w.ask(cmd="prepare", cell=cell_name, shape=shape)
          if r["name"]:
            live.append((w, r))
        per = {r["name"]: [] for _, r in live}
        for k in range(args.rounds):
          for w, r in live[k % len(live) :] + live[: k % len(live)]:
            per[r["name"]].append(w.ask(cmd="time", target=args.target))
        results = {}
        for w, r in live:
          rs = per[r["name"]]
          results[r["name"]] = dict(
            r["facts"],
            config=RECOMMENDED[w.lib],
            fwd_ms=statistics.median(x["fwd_ms"] for x in rs),
            fwdbwd_ms=statistics.median(x["fwdbwd_ms"] for x in rs),
            fwd_ms_range=[min(x["fwd_ms"] for x in rs), max(x["fwd_ms"] for x in rs)],
            fwdbwd_ms_range=[min(x["fwdbwd_ms"] for x in rs), max(x["fwdbwd_ms"] for x in rs)],
            rounds=rs,
          )
        rows += annotate(results, info, shape, cell_name)
        save(args.out, "kernels_cpu_own_process", info, rows, {}, own=True)
  finally:
    for w in workers:
      w.close()
  return rows


# ----------------------------------------------------------------- main
def save(out, stem, info, rows, long, own=False):
  """JSON and markdown of ``rows``, written atomically (after every case: partial
  results survive)."""
  out.mkdir(parents=True, exist_ok=True)
  data = dict(machine=info, rows=rows) | ({"long": long} if long else {})
  io.write_json(out / f"{stem}.json", data)
  io.atomic_write_text(out / f"{stem}.md", markdown(info, rows, long, own=own))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=[*SHAPES, *SMOKE])
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
    "--target", type=float, default=1.0, help="seconds of timed calls per measurement (default 1)"
  )
  ap.add_argument(
    "--own-process",
    action="store_true",
    help="each library in its own process, in its recommended configuration "
    "(kernels_<backend>_own_process.*); default: all in this process (kernels_<backend>.*)",
  )
  ap.add_argument(
    "--tuned-allocator",
    action="store_true",
    help="same-process table: rj.host.tune_host_allocator() for every implementation "
    "(default: glibc's allocator as it is)",
  )
  ap.add_argument("--worker", choices=list(RECOMMENDED), help=argparse.SUPPRESS)
  ap.add_argument(
    "--min-reps", type=int, default=MIN_REPS, help=f"timed calls at least (default {MIN_REPS})"
  )
  ap.add_argument("--peak-n", type=int, default=PEAK_N, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  globals()["MIN_REPS"] = args.min_reps  # _time's default
  if args.worker:
    return worker(args.worker)

  # before JAX starts its threads, which keep the heap they first allocate from
  tuned = args.tuned_allocator and not args.own_process and rj.host.tune_host_allocator()
  info = machine() | env_settings()
  info["host_allocator"] = "tuned" if tuned else "plain"
  info["gemm_gflops"] = gemm_peak(args.peak_n)
  info["peak_n"] = args.peak_n
  info["peak_gflops"] = info["gemm_gflops"]["peak"]
  info["rounds"] = args.rounds
  info["min_reps"], info["target_s"] = args.min_reps, args.target
  info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
  print(f"machine: {info}", flush=True)
  tag = info["backend"]
  if args.own_process:
    info["rnnjax_tunes_allocator"] = RNNJAX_TUNES_ALLOCATOR
    rows = own_process(args, info)
    info["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    save(args.out, f"kernels_{tag}_own_process", info, rows, {}, own=True)
    print("\n" + markdown(info, rows, {}, own=True))
    return
  rows = []
  for shape in args.shapes:
    B, T, I, H = {**SHAPES, **SMOKE}[shape]
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    for cell_name in args.cells:
      impls = {}
      for make in (rnnjax_impls, flax_impls, equinox_impls, haiku_impls, cudnn_impls):
        impls.update(make(cell_name, I, H))
      prepared = {}
      for name, (fn, p) in impls.items():
        try:
          prepared[name] = jax_prepare(fn, p, xs)
        except Exception as e:  # e.g. kernel="ffi" refused for this cell: no row
          print(f"skip {name} ({cell_name}, {shape}): {type(e).__name__}: {e}", flush=True)
      t = torch_prepare(cell_name, B, T, I, H)
      if t:
        prepared[f"torch nn.{TORCH_NAMES[cell_name]}"] = t
      results = measure_rounds(prepared, args.rounds, args.target)
      rows += annotate(results, info, shape, cell_name)
      save(args.out, f"kernels_{tag}", info, rows, {})  # partial results as we go
  long = {} if args.no_long else {c: long_memory(c) for c in args.cells}
  for c, m in long.items():
    print(f"long {LONG} {c}: peak MiB {m}", flush=True)
  info["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
  save(args.out, f"kernels_{tag}", info, rows, long)
  print("\n" + markdown(info, rows, long))


def _pct(x):
  return f"{100 * x:.0f}%"


def markdown(info, rows, long, own=False):
  g = info["gemm_gflops"]
  gemm = ", ".join(f"{k} {v:.0f}" for k, v in g.items() if k != "peak")
  if own:
    how = (
      "Each implementation in a process of its own, in its library's recommended configuration "
      "(the configuration column), the processes timed one at a time in an order rotated each "
      f"round; times are medians over {info.get('rounds', 1)} rounds, with the lowest and "
      "highest round in brackets. rnnjax's process "
      + ("tunes" if info.get("rnnjax_tunes_allocator") else "leaves")
      + " glibc's allocator (`rnnjax.host.tune_host_allocator`"
      + (")" if info.get("rnnjax_tunes_allocator") else " is not called)")
      + "; no other process changes it."
    )
  else:
    how = (
      f"Every implementation in one process; host allocator {info.get('host_allocator', 'plain')} "
      "(`rnnjax.host.tune_host_allocator`, the same for every implementation); times are medians "
      f"over {info.get('rounds', 1)} rounds (every implementation once a round, in a rotated "
      "order), and the range is the speed-up's lowest and highest over the rounds."
    )
  lines = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} "
    f"({info['device']}), jax {info['jax']}"
    + (f", torch {info['torch']}" if "torch" in info else "")
    + f"; {env_line(info)}; load average {info.get('load_average', '?')} at the start"
    + (f", {info['load_average_end']} at the end" if "load_average_end" in info else "")
    + f". GEMM peak: a {info.get('peak_n', PEAK_N)}² float32 matmul ran at {gemm} GFLOP/s; peak = "
    f"{info['peak_gflops']:.0f} GFLOP/s, measured in this run. {how} GFLOP/s counts the "
    "matmuls (forward 2·T·B·(I+H)·gates·H, forward+backward 3×). Speed-ups are against the "
    "fastest peer (not rnnjax) of the same shape and cell; above 1, faster.",
    "",
  ]
  head = "| shape (B,T,I,H) | cell | implementation |"
  if own:
    head += " configuration |"
  lines += [
    head + " fwd ms | fwd GFLOP/s | fwd of peak | fwd+bwd ms | GFLOP/s | of peak | "
    "fwd+bwd speed-up | fwd speed-up | range over rounds (fwd+bwd; fwd) | compile s | peak MiB |",
    "|---|---|---|"
    + ("---|" if own else "")
    + "---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
  ]
  for r in rows:
    peak = "" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
    sp = r.get("speedup_vs_best_peer")
    fsp = r.get("fwd_speedup_vs_best_peer")
    rng = ""
    if "speedup_range" in r and r["impl"] != r["best_peer"]:
      (a, b), (c, d) = r["speedup_range"], r["fwd_speedup_range"]
      rng = f"{a:.2f}–{b:.2f}; {c:.2f}–{d:.2f}"
    fwd, fb = f"{r['fwd_ms']:.2f}", f"{r['fwdbwd_ms']:.2f}"
    if "fwd_ms_range" in r:
      fwd += " ({:.2f}–{:.2f})".format(*r["fwd_ms_range"])
      fb += " ({:.2f}–{:.2f})".format(*r["fwdbwd_ms_range"])
    lines.append(
      f"| {r['shape']} ({r['B']},{r['T']},{r['I']},{r['H']}) | {r['cell']} | {r['impl']} | "
      + (f"{r.get('config', '')} | " if own else "")
      + f"{fwd} | {r['fwd_gflops']:.1f} | {_pct(r['fwd_peak_fraction'])} | "
      f"{fb} | {r['gflops']:.1f} | {_pct(r['peak_fraction'])} | "
      f"{'' if sp is None else f'{sp:.2f}x'} | {'' if fsp is None else f'{fsp:.2f}x'} | {rng} | "
      f"{r.get('compile_s', 0):.2f} | {peak} |"
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
