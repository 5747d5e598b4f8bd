"""The benchmark scripts' own logic: bench_kernels' GFLOP/s, peak fractions and
ratios, its rows and environment record, and benchmarks/gpu_suite.sh's dry run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_kernels as bk  # noqa: E402


def _results():
  """Two rounds of three implementations at the medium shape, made-up times."""
  rounds = {
    "rnnjax": [dict(fwd_ms=10.0, fwdbwd_ms=30.0), dict(fwd_ms=12.0, fwdbwd_ms=34.0)],
    "torch nn.LSTM": [dict(fwd_ms=8.0, fwdbwd_ms=40.0), dict(fwd_ms=8.0, fwdbwd_ms=36.0)],
    "equinox": [dict(fwd_ms=20.0, fwdbwd_ms=50.0), dict(fwd_ms=20.0, fwdbwd_ms=50.0)],
  }
  med = {"rnnjax": (11.0, 32.0), "torch nn.LSTM": (8.0, 38.0), "equinox": (20.0, 50.0)}
  return {
    k: dict(fwd_ms=med[k][0], fwdbwd_ms=med[k][1], rounds=rs, compile_s=0.0, peak_mb=None)
    for k, rs in rounds.items()
  }


def test_annotate_counts_flops_peak_and_ratios_against_the_fastest_peer():
  info = {"peak_gflops": 100.0}
  rows = {r["impl"]: r for r in bk.annotate(_results(), info, "medium", "lstm")}
  B, T, I, H = bk.SHAPES["medium"]
  flop = 2 * T * B * (I + H) * 4 * H  # the LSTM's four gates, forward
  r = rows["rnnjax"]
  assert r["fwd_gflops"] == pytest.approx(flop / 11e-3 / 1e9)
  assert r["gflops"] == pytest.approx(3 * flop / 32e-3 / 1e9)
  assert r["peak_fraction"] == pytest.approx(r["gflops"] / 100.0)
  assert r["fwd_peak_fraction"] == pytest.approx(r["fwd_gflops"] / 100.0)
  assert r["best_peer"] == r["best_fwd_peer"] == "torch nn.LSTM"  # rnnjax is no peer
  assert r["speedup_vs_best_peer"] == pytest.approx(38 / 32)
  assert r["fwd_speedup_vs_best_peer"] == pytest.approx(8 / 11)
  assert r["speedup_range"] == pytest.approx([36 / 34, 40 / 30])  # round by round
  assert r["fwd_speedup_range"] == pytest.approx([8 / 12, 8 / 10])
  assert rows["equinox"]["speedup_vs_best_peer"] == pytest.approx(38 / 50)


@pytest.mark.parametrize("own", [False, True])
def test_markdown_shows_rates_peak_and_environment(own):
  info = dict(
    bk.machine(),
    **bk.env_settings(),
    gemm_gflops={"jax": 90.0, "torch": 100.0, "peak": 100.0},
    peak_gflops=100.0,
    rounds=2,
    load_average="1.00 1.00 1.00",
  )
  results = _results()
  if own:
    for r in results.values():
      r.update(config="its defaults", fwd_ms_range=[1.0, 2.0], fwdbwd_ms_range=[3.0, 4.0])
  rows = bk.annotate(results, info, "medium", "lstm")
  md = bk.markdown(info, rows, {}, own=own)
  assert "peak = 100 GFLOP/s" in md and "OPENBLAS_NUM_THREADS=" in md
  line = next(x for x in md.splitlines() if "| rnnjax |" in x)
  assert f"{rows[0]['gflops']:.1f}" in line and f"{100 * rows[0]['peak_fraction']:.0f}%" in line
  assert ("its defaults" in line) == own
  assert ("(3.00–4.00)" in line) == own


def test_env_settings_record_the_thread_variables(monkeypatch):
  monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
  monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
  env = bk.env_settings()["env"]
  assert env["OPENBLAS_NUM_THREADS"] == "3" and env["OMP_NUM_THREADS"] == "unset"
  assert "OPENBLAS_NUM_THREADS=3" in bk.env_line(bk.env_settings())


def test_an_ffi_row_appears_only_where_the_kernel_loads(monkeypatch):
  monkeypatch.setattr(bk, "ffi_available", lambda: False)
  assert "rnnjax ffi" not in bk.rnnjax_impls("gru", 3, 4)
  monkeypatch.setattr(bk, "ffi_available", lambda: True)
  assert "rnnjax ffi" in bk.rnnjax_impls("gru", 3, 4)
  assert bk.RECOMMENDED["rnnjax ffi"]


def test_gpu_suite_smoke_runs_both_stages(tmp_path):
  env = dict(
    os.environ,
    RNNJAX_GPU_SUITE_RESULTS=str(tmp_path),
    PYTHON=sys.executable,
    TMPDIR=str(tmp_path),
  )
  env.pop("OUT", None)
  proc = subprocess.run(
    ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--smoke"],
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  kernels = json.loads(next(tmp_path.glob("pallas_*.json")).read_text())
  assert kernels["machine"]["smoke"] and kernels["checks"] and kernels["rows"]
  assert all(c["ok"] for c in kernels["checks"]), kernels["checks"]
  assert {r["impl"] for r in kernels["rows"]} >= {"pallas", "xla"}
  assert all("fwd_ms" in r for r in kernels["rows"]), kernels["rows"]
  parallel = json.loads(next(tmp_path.glob("parallel_*.json")).read_text())
  assert parallel["rows"] and "env" in parallel["machine"]


def test_gpu_suite_is_valid_bash_and_passes_only_flags_the_scripts_take():
  """The fast guard of the dry run above (which is slow: it compiles the Pallas
  kernel in interpret mode): the script parses, and every flag it passes is one
  the script it calls declares."""
  import re

  suite = ROOT / "benchmarks" / "gpu_suite.sh"
  subprocess.run(["bash", "-n", str(suite)], check=True)
  text = suite.read_text()
  for array, script in (("KERNELS", "bench_pallas.py"), ("PARALLEL", "bench_parallel.py")):
    declared = set(re.findall(r'"(--[a-z-]+)"', (ROOT / "benchmarks" / script).read_text()))
    passed = set()
    for value in re.findall(rf"{array}=\(([^)]*)\)", text):
      passed |= set(re.findall(r"--[a-z-]+", value))
    assert passed and passed <= declared, (script, passed - declared)
