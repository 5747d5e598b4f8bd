"""rnnjax's parallel-in-time solvers beside the papers' own JAX code, in one process.

The references are run from their own checkouts, given on the command line, and never
copied into rnnjax:

- ``--elk DIR``: lindermanlab/elk (Gonzalez et al. 2024), whose ``elk.algs.deer.seq1d``
  runs DEER (``quasi=False``) and quasi-DEER (``quasi=True``; ``qmem_efficient=False``,
  the diagonal read off ``jax.jacfwd``, its generic path: the other is its GRU formula).
  Its stopping rule: ``max |y^(k+1) − y^(k)| <= 1e-4`` in float32; iterates clipped
  at ±1e8 and NaNs zeroed. Its ``elk_alg`` (ELK proper) needs dynamax and runs a fixed
  number of iterations without a convergence test, so it is not run here.
- ``--deer DIR``: machine-discovery/deer (Lim et al. 2024), ``deer.seq1d`` with its
  ``DEER`` method: full Jacobians, stopping when ``|Δy| <= 1e-4 + 1e-3 |y|`` everywhere
  (float32 defaults), same clipping. It reports only whether it converged, so its
  iteration count is found by bisection on ``max_iter`` (passed traced, so one compile).
  Only ``deer.fseq1d`` is imported (the package's ``__init__`` also imports its ODE
  solvers, which need optimistix).

With jax >= 0.6, elk's two ``jnp.clip(..., a_min=, a_max=)`` calls must read
``min=, max=`` (a rename, nothing else); this script refuses an unpatched checkout:

    sed -i 's/a_min=-clip, a_max=clip/min=-clip, max=clip/' DIR/elk/algs/deer.py

The problems (the issue's): ``h_t = tanh(W h_{t-1} + V x_t + b)``, ``W ~ N(0, g²/H)``,
``V ~ N(0, 1/H)``, ``b ~ N(0, 0.1²)``, ``x_t ~ N(0, 1)``, ``I = H``, float32, B = 1, from
zeros. rnnjax runs `rj.elman` with those weights (its closed-form diagonal,
`rnnjax.ClosedDiagonal`, for quasi-DEER) and, to show what a user's own cell gets, a
hint-free `rj.custom_cell` of the same step (the diagonal read off ``jax.jacfwd``);
``tol=1e-4`` (its test is the residual ``max |s_t − f(s_{t-1}, x_t)|``, the
references' the step between iterates), ``fallback="none"``. Every solve is jitted and
compiled before timing; each round calls every implementation once, in an order
rotated from round to round, and the tables give the medians. Each row also gives the
largest distance to the sequential trajectory (`rj.scan`, float32).

    python benchmarks/parallel_references.py --elk /path/to/elk --deer /path/to/deer \\
        --elk-commit 58782bd --deer-commit 409140f
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine

import rnnjax as rj
from rnnjax.apps import io

TOL = 1e-4  # the references' float32 tolerance
QUASI_GRID = [(H, g) for H in (8, 16, 32, 64) for g in (0.5, 0.9)]
QUASI_T = 1000
DEER_GRID = [(g, T) for g in (2.0, 3.0) for T in (100, 200, 500)]
DEER_H = 16
DEER_SEEDS = 3
DEER_DTYPES = [(jnp.float32, TOL), (jnp.float64, 1e-7)]  # elk's float64 tolerance
ELK_PROBLEMS = [(16, 0.5), (16, 0.9)]
ELK_T = 1000


def load_references(elk_dir: Path, deer_dir: Path) -> tuple[types.ModuleType, types.ModuleType]:
  """``elk.algs.deer`` and ``deer.fseq1d`` from the two checkouts."""
  src = (elk_dir / "elk" / "algs" / "deer.py").read_text(encoding="utf-8")
  if "a_min=" in src:
    raise SystemExit(
      f"{elk_dir}: elk/algs/deer.py still calls jnp.clip(a_min=, a_max=), which this jax "
      "renamed; patch it as the docstring says"
    )
  sys.path.insert(0, str(elk_dir))
  package = types.ModuleType("deer")  # deer's own __init__ imports its ODE solvers too
  package.__path__ = [str(deer_dir / "deer")]
  sys.modules["deer"] = package
  import deer.fseq1d as deer_seq
  import elk.algs.deer as elk_deer

  return elk_deer, deer_seq


def problem(
  H: int, g: float, T: int, seed: int, dtype: Any = jnp.float32
) -> tuple[tuple[jax.Array, ...], jax.Array]:
  """``(W, V, b)`` in the column layout (``W @ h``) and ``xs: [T, H]`` (drawn in
  float32, so both dtypes solve the same problem)."""
  k = jax.random.split(jax.random.key(seed), 4)
  W = g / H**0.5 * jax.random.normal(k[0], (H, H), jnp.float32)
  V = jax.random.normal(k[1], (H, H), jnp.float32) / H**0.5
  b = 0.1 * jax.random.normal(k[2], (H,), jnp.float32)
  xs = jax.random.normal(k[3], (T, H), jnp.float32)
  return tuple(a.astype(dtype) for a in (W, V, b)), xs.astype(dtype)


def residual(p: tuple[jax.Array, ...], xs: jax.Array, ys: jax.Array) -> float:
  """``max |y_t − f(y_{t-1}, x_t)|`` in float64 NumPy: how far ``ys`` is from being a
  trajectory of the recurrence (from ``y_0 = 0``), whatever its dtype."""
  W, V, b = (np.asarray(a, np.float64) for a in p)
  y = np.asarray(ys, np.float64)
  prev = np.concatenate([np.zeros((1, y.shape[1])), y[:-1]])
  x = np.asarray(xs, np.float64)
  return float(np.max(np.abs(y - np.tanh(prev @ W.T + x @ V.T + b))))


def ref_step(y: jax.Array, x: jax.Array, p: tuple[jax.Array, ...]) -> jax.Array:
  W, V, b = p
  return jnp.tanh(W @ y + V @ x + b)


def rnnjax_params(p: tuple[jax.Array, ...]) -> rj.ElmanParams:
  W, V, b = p
  return rj.ElmanParams(w_x=V.T, w_h=W.T, b=b)  # row layout: h @ w_h = W h


def user_cell(H: int) -> rj.Cell:
  """The same step as a hint-free custom cell: what a user's own cell gets."""

  def init(key: jax.Array, I: int) -> rj.ElmanParams:
    return rj.elman(H).init(key, I)

  def step(p: rj.ElmanParams, h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = jnp.tanh(x @ p.w_x + h @ p.w_h + p.b)
    return h, h

  return rj.custom_cell(
    init, step, lambda shape=(), dtype=jnp.float32: jnp.zeros((*shape, H), dtype), name="user"
  )


def timed(fns: dict, args: dict, rounds: int) -> dict[str, list[float]]:
  """Each compiled ``fns[name](*args[name])``'s ms in every round (interleaved, the
  order rotated from round to round)."""
  names = list(fns)
  times: dict[str, list[float]] = {n: [] for n in names}
  for r in range(rounds):
    for n in names[r % len(names) :] + names[: r % len(names)]:
      t = time.perf_counter()
      jax.block_until_ready(fns[n](*args[n]))
      times[n].append(time.perf_counter() - t)
  return {n: [1e3 * t for t in v] for n, v in times.items()}


def paired_ratio(a: list[float], b: list[float]) -> float:
  """The median over rounds of ``a / b`` measured in the same round: robust to the
  load of a shared machine changing from round to round."""
  return statistics.median(x / y for x, y in zip(a, b, strict=True))


def sequential(H: int, p: tuple[jax.Array, ...], xs: jax.Array) -> jax.Array:
  return rj.scan(rj.elman(H), rnnjax_params(p), xs[:, None])[1][:, 0]


def quasi_rows(elk_deer: types.ModuleType, rounds: int, sizes: list[int] | None) -> list[dict]:
  rows = []
  T = QUASI_T
  for H, g in QUASI_GRID:
    if sizes and H not in sizes:
      continue
    p, xs = problem(H, g, T, seed=H)
    y0 = jnp.zeros(H, jnp.float32)
    ref = jax.jit(
      lambda p, xs, y0=y0: elk_deer.seq1d(
        ref_step, y0, xs, p, max_iter=T, quasi=True, qmem_efficient=False
      )
    )
    fns, args = {"elk seq1d(quasi=True)": ref}, {"elk seq1d(quasi=True)": (p, xs)}
    for name, cell in (("rnnjax elman", rj.elman(H)), ("rnnjax custom cell", user_cell(H))):
      fns[name] = jax.jit(
        lambda q, xs, cell=cell: rj.parallel_scan(
          cell, q, xs[:, None], method="quasi", tol=TOL, max_iters=T, fallback="none"
        )
      )
      args[name] = (rnnjax_params(p), xs)
    want = sequential(H, p, xs)
    outs = {n: jax.block_until_ready(fns[n](*args[n])) for n in fns}  # compile
    ms = timed(fns, args, rounds)
    base = ms["elk seq1d(quasi=True)"]
    for n, out in outs.items():
      if n.startswith("elk"):
        ys, iters = out
        conv = int(iters) < T
      else:
        ys, info = out[1][:, 0], out[2]
        iters, conv = info.iterations, bool(info.converged)
      row = dict(
        H=H, g=g, T=T, impl=n, iterations=int(iters), converged=conv,
        ms=statistics.median(ms[n]), ms_min=min(ms[n]), ratio_vs_elk=paired_ratio(ms[n], base),
        ratio_of_minima=min(ms[n]) / min(base),
        max_abs_error_vs_scan=float(jnp.max(jnp.abs(ys - want))),
      )  # fmt: skip
      print(row, flush=True)
      rows.append(row)
  return rows


def deer_rows(elk_deer: types.ModuleType, deer_seq: types.ModuleType) -> list[dict]:
  rows = []
  H = DEER_H
  for dtype, tol in DEER_DTYPES:
    y0 = jnp.zeros(H, dtype)
    deer_row_block(elk_deer, deer_seq, H, y0, dtype, tol, rows)
  return rows


def deer_row_block(
  elk_deer: types.ModuleType,
  deer_seq: types.ModuleType,
  H: int,
  y0: jax.Array,
  dtype: Any,
  tol: float,
  rows: list[dict],
) -> None:
  for T in sorted({T for _, T in DEER_GRID}):
    elk_fn = jax.jit(lambda p, xs, T=T: elk_deer.seq1d(ref_step, y0, xs, p, max_iter=T))
    md_fn = jax.jit(
      lambda p, xs, m: deer_seq.seq1d(ref_step, y0, xs, p, method=deer_seq.DEER(max_iter=m))
    )
    rj_fn = jax.jit(
      lambda q, xs, T=T: rj.parallel_scan(
        rj.elman(H), q, xs[:, None], method="deer", tol=tol, max_iters=T, fallback="none"
      )
    )
    for g in sorted({g for g, t in DEER_GRID if t == T}):
      for seed in range(DEER_SEEDS):
        p, xs = problem(H, g, T, seed=1000 + seed, dtype=dtype)
        want = sequential(H, p, xs)
        ys, iters = elk_fn(p, xs)
        out = [("elk seq1d", int(iters), int(iters) < T, ys)]

        # machine-discovery/deer reports success (iterations < max_iter) only: its
        # iteration count n is the fewest max_iter that succeeds, less one; tried first
        # at elk's count (the same iteration, so mostly the same n), else bisected
        def ok(m: int, md_fn: Any = md_fn, p: Any = p, xs: Any = xs) -> bool:
          return bool(jnp.all(md_fn(p, xs, jnp.asarray(m)).success))

        res = md_fn(p, xs, jnp.asarray(T))
        k_elk = int(iters)
        if not bool(jnp.all(res.success)):
          out.append(("machine-discovery deer", T, False, res.value))
        elif 0 < k_elk < T and ok(k_elk + 1) and not ok(k_elk):
          out.append(("machine-discovery deer", k_elk, True, res.value))
        else:
          lo, hi = 1, T  # success at hi
          while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
          out.append(("machine-discovery deer", hi - 1, True, res.value))
        _, ys_rj, info = rj_fn(rnnjax_params(p), xs)
        out.append(("rnnjax", int(info.iterations), bool(info.converged), ys_rj[:, 0]))
        for name, k, conv, ys in out:
          row = dict(
            dtype=jnp.dtype(dtype).name, H=H, g=g, T=T, seed=seed, impl=name, iterations=k,
            converged=conv, max_abs_error_vs_scan=float(jnp.max(jnp.abs(ys - want))),
            residual=residual(p, xs, ys),
            repairs=int(info.repairs) if name == "rnnjax" else None,
          )  # fmt: skip
          print(row, flush=True)
          rows.append(row)


def elk_rows(rounds: int) -> list[dict]:
  # parallel_scan's damping=None means each method's own default: ELK's is ELK_DAMPING
  default = inspect.signature(rj.parallel_scan).parameters["damping"].default
  if default is None:
    from rnnjax._src.parallel import ELK_DAMPING as default
  rows = []
  for H, g in ELK_PROBLEMS:
    p, xs = problem(H, g, ELK_T, seed=H)
    want = sequential(H, p, xs)
    fns, args = {}, {}
    for damping in (default, 1e-6):
      name = f"damping={damping:g}"
      fns[name] = jax.jit(
        lambda q, xs, damping=damping, H=H: rj.parallel_scan(
          rj.elman(H), q, xs[:, None], method="elk", tol=TOL, damping=damping,
          max_iters=ELK_T, fallback="none",
        )
      )  # fmt: skip
      args[name] = (rnnjax_params(p), xs)
    outs = {n: jax.block_until_ready(fns[n](*args[n])) for n in fns}
    ms = timed(fns, args, rounds)
    for n, (_, ys, info) in outs.items():
      row = dict(
        H=H, g=g, T=ELK_T, damping=n.split("=")[1], default=n == f"damping={default:g}",
        iterations=int(info.iterations), converged=bool(info.converged),
        ms=statistics.median(ms[n]),
        max_abs_error_vs_scan=float(jnp.max(jnp.abs(ys[:, 0] - want))),
      )  # fmt: skip
      print(row, flush=True)
      rows.append(row)
  return rows


def _load_note(cfg: dict) -> str:
  """What the machine was doing: the 1-minute load average before and after the run."""
  load = cfg.get("load")
  if load is None:
    return "shared with other jobs while this ran: read the ratios, not the absolute times"
  return f"load average {load[0]:.1f} before the run, {load[1]:.1f} after"


def markdown(data: dict) -> str:
  m, cfg = data["machine"], data["config"]
  md = [
    f"Machine: {m['cpu']} ({m['cores']} cores; {_load_note(cfg)}), "
    f"backend {m['backend']}, jax {m['jax']}. "
    f"`python benchmarks/parallel_references.py`; references: lindermanlab/elk at "
    f"{cfg['elk_commit']} ({cfg['elk_patch']}), machine-discovery/deer at "
    f"{cfg['deer_commit']}. Problem: tanh RNN, W ~ N(0, g²/H), V ~ N(0, 1/H), "
    "b ~ N(0, 0.1²), x ~ N(0, 1), float32, B = 1, from zeros; tolerance 1e-4 "
    "(the references: the step between iterates; rnnjax: the residual). Compile "
    f"excluded; medians of {cfg['rounds']} interleaved rounds; a ratio is the median "
    "over rounds of the two times taken in the same round, and the ratio of the fastest "
    "times (the least disturbed by the other jobs)."
    + (f" ({cfg['note']}.)" if cfg.get("note") else ""),
    "",
    f"### Quasi-DEER, T = {QUASI_T}",
    "",
    "| H | g | elk ms (iters) | rnnjax elman ms (iters) | ratio: paired, of minima "
    "| rnnjax custom cell ms | ratio: paired, of minima | max error vs scan (elk, rnnjax) |",
    "|---:|---:|---:|---:|---:|---:|---:|---|",
  ]
  q = data["quasi"]
  for H, g in QUASI_GRID:
    r = {x["impl"]: x for x in q if x["H"] == H and x["g"] == g}
    if len(r) < 3:  # not run
      continue
    e, o, u = r["elk seq1d(quasi=True)"], r["rnnjax elman"], r["rnnjax custom cell"]
    md.append(
      f"| {H} | {g:g} | {e['ms']:.2f} ({e['iterations']}) | {o['ms']:.2f} ({o['iterations']}) "
      f"| {o['ratio_vs_elk']:.2f}×, {o['ratio_of_minima']:.2f}× | {u['ms']:.2f} | "
      f"{u['ratio_vs_elk']:.2f}×, {u['ratio_of_minima']:.2f}× | "
      f"{e['max_abs_error_vs_scan']:.1e}, {o['max_abs_error_vs_scan']:.1e} |"
    )
  md += [
    "",
    f"### DEER iterations to tolerance, H = {DEER_H}, budget T ({DEER_SEEDS} seeds)",
    "",
    "Tolerance 1e-4 in float32 and 1e-7 in float64 (elk's); the residual is "
    "max |y_t − f(y_(t-1), x_t)| of the returned trajectory, in float64.",
    "",
    "| dtype | g | T | seed | elk seq1d | machine-discovery deer | rnnjax (repairs) "
    "| max error vs scan (elk, deer, rnnjax) | residual (elk, deer, rnnjax) |",
    "|---|---:|---:|---:|---:|---:|---:|---|---|",
  ]

  def it(r: dict) -> str:
    return f"{r['iterations']}" + ("" if r["converged"] else " (not converged)")

  d = data["deer"]
  for dt in sorted({x["dtype"] for x in d}, reverse=True):
    for g, T in DEER_GRID:
      for seed in range(DEER_SEEDS):
        r = {
          x["impl"]: x
          for x in d
          if x["dtype"] == dt and x["g"] == g and x["T"] == T and x["seed"] == seed
        }
        if len(r) < 3:  # not run
          continue
        e, mdr, o = r["elk seq1d"], r["machine-discovery deer"], r["rnnjax"]
        errs = ", ".join(f"{x['max_abs_error_vs_scan']:.1e}" for x in (e, mdr, o))
        res = ", ".join(f"{x['residual']:.1e}" for x in (e, mdr, o))
        md.append(
          f"| {dt} | {g:g} | {T} | {seed} | {it(e)} | {it(mdr)} | {it(o)} ({o['repairs']}) "
          f"| {errs} | {res} |"
        )
  md += [
    "",
    f"### rnnjax ELK: initial damping λ, T = {ELK_T}",
    "",
    "| H | g | damping | default | iterations | converged | ms | max error vs scan |",
    "|---:|---:|---:|---|---:|---|---:|---:|",
  ]
  for r in data.get("elk", []):
    md.append(
      f"| {r['H']} | {r['g']:g} | {r['damping']} | {r['default']} | {r['iterations']} | "
      f"{r['converged']} | {r['ms']:.2f} | {r['max_abs_error_vs_scan']:.1e} |"
    )
  return "\n".join(md) + "\n"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--elk", type=Path, required=True, help="a lindermanlab/elk checkout")
  ap.add_argument("--deer", type=Path, required=True, help="a machine-discovery/deer checkout")
  ap.add_argument("--elk-commit", default="unknown", help="recorded with the results")
  ap.add_argument("--deer-commit", default="unknown", help="recorded with the results")
  ap.add_argument("--rounds", type=int, default=9)
  ap.add_argument("--parts", nargs="*", default=["quasi", "deer", "elk"])
  ap.add_argument("--quasi-H", type=int, nargs="*", default=None, help="only these H")
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  jax.config.update("jax_enable_x64", True)  # for the float64 DEER rows; the rest is float32
  elk_deer, deer_seq = load_references(args.elk, args.deer)
  name = f"parallel_references_{jax.default_backend()}"
  path = args.out / f"{name}.json"
  partial_run = set(args.parts) != {"quasi", "deer", "elk"}
  data = json.loads(path.read_text(encoding="utf-8")) if path.exists() and partial_run else {}
  load_before = os.getloadavg()[0]
  data["machine"] = machine()
  data["config"] = dict(
    elk_commit=args.elk_commit,
    deer_commit=args.deer_commit,
    elk_patch="jnp.clip(a_min=, a_max=) renamed to (min=, max=) in elk/algs/deer.py",
    rounds=args.rounds,
    tol=TOL,
    quasi_grid=QUASI_GRID,
    quasi_T=QUASI_T,
    deer_grid=DEER_GRID,
    deer_H=DEER_H,
    deer_dtypes=[(jnp.dtype(d).name, t) for d, t in DEER_DTYPES],
    elk_problems=ELK_PROBLEMS,
    elk_T=ELK_T,
  )
  if "quasi" in args.parts:
    new = quasi_rows(elk_deer, args.rounds, args.quasi_H)
    data["quasi"] = [r for r in data.get("quasi", []) if r["H"] not in {x["H"] for x in new}] + new
  if "deer" in args.parts:
    data["deer"] = deer_rows(elk_deer, deer_seq)
  if "elk" in args.parts:
    data["elk"] = elk_rows(args.rounds)
  data["config"]["load"] = [load_before, os.getloadavg()[0]]
  io.write_json(path, data)
  md = markdown(data)
  io.atomic_write_text(args.out / f"{name}.md", md)
  print(md)


if __name__ == "__main__":
  main()
