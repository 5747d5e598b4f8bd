"""`rj.jacobian.parallel_outlook` against measured DEER iterations, over the grid of issue 23,
and ELK's iterations per initial damping on the same problems.

The grid:

- tanh Elman RNNs, H = 16, ``W ~ N(0, g²/H)`` for g in {0.5, 0.9, 1.0, 1.5, 2, 3}
  (one cell, ``w_h`` scaled by g, so every gain shares the compiled solves), at
  T in {100, 300, 1000, 3000}, driven (``x_t ~ N(0, 1)``, ``V ~ N(0, 1/H)``, from zeros)
  and undriven (``x_t = 0`` from a random N(0, 1) carry);
- a GRU and an LSTM (H = 16) on adding-problem inputs at the same T, at initialisation
  and after a short training on the adding problem (T = 100, ``--train-steps``).

Each row: the outlook's prediction (iterations, range, pays off) and DEER's measured
iterations to the default tolerance (1e-5, float32) with a budget of T iterations and
``fallback="none"``. The targets: prediction within 2× of the measured count wherever
DEER converges within T, and "does not pay off" wherever it needs more than T/10
iterations (or does not converge). ELK (``method="elk"``) runs on the driven tanh RNNs
at T in ``--elk-T`` for each initial damping in ``--dampings``.

``--seed S`` draws every weight, input and initial carry (and the training run) from
other keys: the rule's constants were fitted on seed 0, so a run with another seed,
stored as ``parallel_outlook_seed<S>_<backend>``, measures its hit rates out of sample.

    python benchmarks/parallel_outlook.py                # about 5 min on 2 quiet CPU cores
    python benchmarks/parallel_outlook.py --seed 1 --skip elk   # the held-out grid
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine

import rnnjax as rj
from rnnjax._src.jacobian import outlook_from
from rnnjax.apps import experiment, io

GAINS = [0.5, 0.9, 1.0, 1.5, 2.0, 3.0]
TS = [100, 300, 1000, 3000]


def deer(cell, params, xs, carry):
  """DEER's iterations to the default tolerance, budget T: ``(iterations, converged)``."""
  T = xs.shape[0]
  c = None if carry is None else jax.tree.map(lambda a: a[None], carry)
  _, _, info = rj.parallel_scan(cell, params, xs[:, None], c, max_iters=T, fallback="none")
  return int(info.iterations), bool(info.converged)


def row(kind, label, cell, params, xs, carry, **extra):
  T = xs.shape[0]
  t0 = time.perf_counter()
  out = rj.jacobian.parallel_outlook(cell, params, xs, carry)
  t_outlook = time.perf_counter() - t0
  t0 = time.perf_counter()
  its, conv = deer(cell, params, xs, carry)
  t_deer = time.perf_counter() - t0
  r = dict(
    kind=kind,
    label=label,
    T=T,
    **extra,
    measured=its,
    converged=conv,
    lyapunov_max=out["lyapunov_max"],
    window_growth=out["window_growth"],
    halfway_growth=out["halfway_growth"],
    tol=out["tol"],
    outlook_s=t_outlook,
    deer_s=t_deer,
  )
  score(r)
  print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
  return r


def score(r):
  """Fill in the prediction from the row's measurements (`outlook_from`, the function
  `parallel_outlook` ends with) and check it against the measured iterations."""
  out = outlook_from(
    r["lyapunov_max"], r["window_growth"], r["halfway_growth"], r["T"], r.get("tol", 1e-5)
  )
  its, conv, T = r["measured"], r["converged"], r["T"]
  r.update(
    predicted=out["iterations"],
    range=list(out["range"]),
    pays_off=out["pays_off"],
    prediction=out["prediction"],
    within_2x=(out["iterations"] / 2 <= its <= 2 * out["iterations"]) if conv else None,
    # where DEER needs more than T/10 iterations (or does not converge): said so?
    pays_off_target=(not out["pays_off"]) if (not conv or its > T / 10) else None,
  )
  return r


def rescore(out_dir: Path, name: str) -> None:
  """Re-score the stored measurements with the current constants, without re-measuring."""
  data = json.loads((out_dir / f"{name}.json").read_text())
  for r in data["rows"]:
    score(r)
  io.write_json(out_dir / f"{name}.json", data)
  seed = data["config"].get("seed", 0)
  md = markdown(data["rows"], data["elk"], data["machine"], seed)
  io.atomic_write_text(out_dir / f"{name}.md", md)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--H", type=int, default=16)
  ap.add_argument("--Ts", type=int, nargs="*", default=TS)
  ap.add_argument("--gains", type=float, nargs="*", default=GAINS)
  ap.add_argument("--train-steps", type=int, default=2000)
  ap.add_argument("--train-lr", type=float, default=3e-3)
  ap.add_argument("--elk-T", type=int, nargs="*", default=[100, 300])
  ap.add_argument("--dampings", type=float, nargs="*", default=[1.0, 1e-2, 1e-4, 1e-6])
  ap.add_argument("--skip", nargs="*", default=[], choices=["tanh", "gated", "elk"])
  ap.add_argument("--seed", type=int, default=0, help="keys of weights, inputs and training")
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  ap.add_argument(
    "--rescore", action="store_true", help="re-score the stored measurements, measure nothing"
  )
  args = ap.parse_args()
  if args.rescore:
    suffix = "" if args.seed == 0 else f"_seed{args.seed}"
    rescore(args.out, f"parallel_outlook{suffix}_{jax.default_backend()}")
    return
  H, Tmax = args.H, max(args.Ts)
  rows, elk_rows = [], []
  info = machine()
  config = {k: v for k, v in vars(args).items() if k != "out"}
  seed = args.seed
  name = f"parallel_outlook{'' if seed == 0 else f'_seed{seed}'}_{info['backend']}"

  def save():
    io.write_json(
      args.out / f"{name}.json", dict(machine=info, config=config, rows=rows, elk=elk_rows)
    )

  # tanh RNNs: one cell for every gain (w_h scaled), so the solves compile once per T
  cell = rj.elman(H, input_init=rj.init.gaussian(1.0), recurrent_init=rj.init.gaussian(1.0))
  base = cell.init(jax.random.key(seed), H)
  xs_drive = jax.random.normal(jax.random.key(1000 + seed), (Tmax, H), jnp.float32)
  c_free = jax.random.normal(jax.random.key(5 + seed), (H,), jnp.float32)
  if "tanh" not in args.skip:
    for g in args.gains:
      p = base._replace(w_h=g * base.w_h)
      for drive in (True, False):
        for T in args.Ts:
          xs = xs_drive[:T] if drive else jnp.zeros((T, H), jnp.float32)
          rows.append(
            row("tanh", f"tanh g={g:g}", cell, p, xs, None if drive else c_free, g=g, drive=drive)
          )
        save()
  if "gated" not in args.skip:
    xs_add = jnp.asarray(rj.tasks.adding(jax.random.key(7 + seed), 1, Tmax).xs[:, 0], jnp.float32)
    for cname in ("gru", "lstm"):
      gcell = rj.make_cell(cname, H)
      init = gcell.init(jax.random.key(seed), 2)
      res = experiment.run_experiment(
        "adding",
        cname,
        100,
        hidden=H,
        steps=args.train_steps,
        lr=args.train_lr,
        minutes=None,
        progress=False,
        seed=seed,
      )
      trained = res["params"]["rnn"]
      for stage, p in (("initialised", init), ("trained", trained)):
        for T in args.Ts:
          rows.append(
            row(
              cname,
              f"{cname} {stage}",
              gcell,
              p,
              xs_add[:T],
              None,
              stage=stage,
              drive=True,
              final_test_loss=res["final_test_loss"],
            )
          )
        save()
  if "elk" not in args.skip:
    for T in args.elk_T:
      xs = xs_drive[:T, None]
      for damping in args.dampings:  # one compiled solve per (T, damping), params traced
        solve = jax.jit(
          lambda p, xs=xs, damping=damping: rj.parallel_scan(
            cell, p, xs, method="elk", damping=damping, max_iters=xs.shape[0], fallback="none"
          )
        )
        for g in args.gains:
          p = base._replace(w_h=g * base.w_h)
          want = rj.scan(cell, p, xs)[1]
          t0 = time.perf_counter()
          _, ys, inf = jax.block_until_ready(solve(p))
          r = dict(
            g=g,
            T=T,
            damping=damping,
            iterations=int(inf.iterations),
            converged=bool(inf.converged),
            max_abs_error_vs_scan=float(jnp.max(jnp.abs(ys - want))),
            seconds=time.perf_counter() - t0,
          )
          print(r, flush=True)
          elk_rows.append(r)
        save()
  save()
  io.atomic_write_text(args.out / f"{name}.md", markdown(rows, elk_rows, info, seed))


def hit_rates(rows):
  """``(within 2×, said "does not pay off" where it does not, the verdict right both
  ways)``, each ``(hits, cases)``: the last counts every row whose predicted ``pays_off``
  equals the measured one (converged within T/10 iterations)."""
  a = [r["within_2x"] for r in rows if r["within_2x"] is not None]
  b = [r["pays_off_target"] for r in rows if r["pays_off_target"] is not None]
  c = [r["pays_off"] == (r["converged"] and r["measured"] <= r["T"] / 10) for r in rows]
  return (sum(a), len(a)), (sum(b), len(b)), (sum(c), len(c))


def markdown(rows, elk_rows, info, seed=0) -> str:
  (a, na), (b, nb), (c, nc) = hit_rates(rows)
  cmd = "python benchmarks/parallel_outlook.py" + ("" if seed == 0 else f" --seed {seed}")
  sample = (
    "Seed 0: the grid the rule's constants were fitted on (in sample)."
    if seed == 0
    else f"Seed {seed}: weights, inputs and training drawn from other keys than the grid the "
    "rule's constants were fitted on (out of sample)."
  )
  md = [
    f"Machine: {info['cpu']}, backend {info['backend']}, jax {info['jax']}; "
    f"`{cmd}` (DEER, float32, default tol 1e-5, budget T, from zeros; H = 16). {sample}",
    "",
    f'Within 2× where DEER converges within T: **{a}/{na}**. "Does not pay off" predicted '
    f"where DEER needs more than T/10 iterations or does not converge: **{b}/{nb}**. "
    f"The pays-off verdict (at most T/10 iterations or not) right both ways: **{c}/{nc}**.",
    "",
    "| system | drive | T | λ₁ | window growth G | halfway growth | predicted (range) | "
    "measured | pays off? | within 2× | T/10 target |",
    "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
  ]
  for r in rows:
    meas = str(r["measured"]) if r["converged"] else f"> {r['T']} (not converged)"
    ok1 = "" if r["within_2x"] is None else ("yes" if r["within_2x"] else "**no**")
    ok2 = "" if r["pays_off_target"] is None else ("yes" if r["pays_off_target"] else "**no**")
    drive = "" if r["kind"] != "tanh" else ("N(0,1)" if r["drive"] else "none")
    md.append(
      f"| {r['label']} | {drive} | {r['T']} | {r['lyapunov_max']:+.3f} | "
      f"{r['window_growth']:.1f} | {r['halfway_growth']:+.3f} | {r['predicted']} "
      f"({r['range'][0]}–{r['range'][1]}) | {meas} | {'yes' if r['pays_off'] else 'no'} | "
      f"{ok1} | {ok2} |"
    )
  if elk_rows:
    md += [
      "",
      'ELK (`method="elk"`) on the driven tanh RNNs: iterations to 1e-5 per initial '
      "damping λ (budget T; `-` = not converged).",
      "",
    ]
    damps = sorted({r["damping"] for r in elk_rows}, reverse=True)
    md.append("| g | T | " + " | ".join(f"λ = {d:g}" for d in damps) + " |")
    md.append("|---:|---:|" + "---:|" * len(damps))
    keys = sorted({(r["T"], r["g"]) for r in elk_rows})
    for T, g in keys:
      cells = []
      for d in damps:
        m = [r for r in elk_rows if r["T"] == T and r["g"] == g and r["damping"] == d]
        cells.append(str(m[0]["iterations"]) if m and m[0]["converged"] else "-")
      md.append(f"| {g:g} | {T} | " + " | ".join(cells) + " |")
  return "\n".join(md) + "\n"


if __name__ == "__main__":
  main()
