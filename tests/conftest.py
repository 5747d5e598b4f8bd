"""Test configuration: float64 available, silent broadcasting is an error, and the
tests that take minutes kept out of `make test` (run by `make test-slow` and CI)."""

import importlib.util
import mmap
import os
from pathlib import Path


def _xla_knows(flag: str) -> bool:
  """Whether the installed jaxlib's XLA defines ``flag``: XLA aborts the process on an
  unknown flag in XLA_FLAGS, and its CPU flags come and go between releases, so a
  flag that only saves time is set where its name is in jaxlib's libraries."""
  spec = importlib.util.find_spec("jaxlib")
  if spec is None or not spec.submodule_search_locations:
    return False
  needle = flag.encode()
  for lib in Path(next(iter(spec.submodule_search_locations))).glob("*.so"):
    if lib.stat().st_size == 0:
      continue
    with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
      if m.find(needle) >= 0:
        return True
  return False


# The suite's shapes are tiny, so compiling dominates its time, and two flags make
# XLA's CPU backend compile faster (no fast-math either way). Both are set before JAX
# starts its backend; subprocesses the tests start inherit them.
# - No LLVM optimisation passes: about a quarter faster (measured on
#   tests/test_scan.py and test_resets.py: 88 s -> 64 s on 2 cores). It changes how
#   the machine code is scheduled, not what it computes.
# - XLA's elemental loop emitter for fused loops instead of its MLIR fusion emitters:
#   the fast suite 573 s -> 318 s (jaxlib 0.10.2, `-n 2 -m "not slow"` on 2 quiet
#   cores, all passing). The two emitters' tanh, exp and log1p may differ in the last
#   bits (tanh: both within 4.5 ulp in float32; 1 in 2 results differ, by up to 4e-7
#   relative in float32 and 7e-16 in float64); the suite passes with either. Where
#   XLA has retired the flag, it is left out.
_FLAGS = ["--xla_backend_optimization_level=0"]
if _xla_knows("xla_cpu_use_fusion_emitters"):
  _FLAGS.append("--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_FLAGS]).strip()

import jax  # noqa: E402  (after XLA_FLAGS: JAX reads it when its backend starts)
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

_GREFF_KEPT = "test_check_cell[FGR]; each variant's values and gradients against its equations"

# Tests that need 10 s or more each on this 2-core machine (measured with
# `--durations`), left out of `make test` to keep the suite under 10 minutes and
# run by `make test-slow`; CI runs both. Each entry says what keeps its subject
# covered in the fast suite. A node id without brackets covers every parameter.
SLOW = {
  # benchmarks/gpu_suite.sh's dry run: three processes, the Pallas kernel compiled in
  # interpret mode; its flags stay checked in the fast suite
  "tests/test_benchmarks.py::test_gpu_suite_smoke_runs_both_stages": (
    "test_gpu_suite_is_valid_bash_and_passes_only_flags_the_scripts_take"
  ),
  # learning demonstrations: they train until a model has learnt something
  "tests/test_demo.py::test_demo_learns_and_writes_summary": "test_cli_visualize's run",
  "tests/test_models.py::test_seq2seq_generalises_to_held_out_strings_of_every_length": "",
  "tests/test_models.py::test_bidirectional_tagger_uses_the_future": "",
  "tests/test_models.py::test_held_out_strings_carry_no_loss_in_training": "",
  "tests/test_models.py::test_classifier_learns_with_lengths_and_ignores_padding": "",
  "tests/test_boundaries.py::test_experiment_boundaries_smoke": "its unit tests",
  "tests/test_boundaries.py::test_experiment_boundaries_reinforce_and_the_f1_curve": (
    "test_the_papers_benchmark_writes_its_keys runs the command"
  ),
  "tests/test_boundaries.py::test_the_estimator_comparison_writes_what_notebook_04_reads": (
    "test_the_stochastic_step_draws_the_boundary_and_returns_its_log_probability"
  ),
  "tests/test_charlm.py::test_regularised_training_is_reproducible_and_off_at_evaluation": "",
  "tests/test_docs.py::test_docs_python_blocks_are_doctests_that_run_alone[docs/guides/"
  "gradients.md]": "the walkthrough trains a model first",
  # a page whose own test runs the same blocks (and counts them)
  "tests/test_docs.py::test_docs_python_blocks_are_doctests_that_run_alone[docs/"
  "add_a_cell.md]": "test_add_a_cell_page_blocks_are_doctests_that_run_alone",
  # whole notebooks: test_stored_notebook_is_current_and_executed checks the stored ones
  "tests/test_notebooks.py::test_notebook_executes": "make notebooks",
  # runs in subprocesses: four devices, a killed run (test_run_lock kills one too)
  "tests/test_multidevice.py::test_one_and_four_devices_agree_and_a_four_device_run_resumes": "",
  "tests/test_charlm.py::test_killed_run_resumes_to_the_same_loss_curve": "test_run_lock",
  # larger members of a parametrised family whose small member stays in the suite
  "tests/test_bptt.py::test_tbptt_with_resets_matches_stop_gradient_reference[2-7]": "[3-3]",
  "tests/test_bptt.py::test_tbptt_with_resets_matches_stop_gradient_reference[4-8]": "[3-3]",
  "tests/test_bptt.py::test_tbptt_with_resets_matches_stop_gradient_reference[3-5]": "[3-3]",
  "tests/test_bptt.py::test_tbptt_matches_stop_gradient_reference[2-7]": "the others",
  "tests/test_parallel.py::test_parallel_equals_scan_with_lengths_and_reverse[hmlstm-quasi]": "",
  "tests/test_parallel.py::test_gradients_equal_scans[gru-parallel]": "the other cells",
  "tests/test_layers.py::test_stacked_bidirectional_resets_equal_separate_episodes": (
    "test_resets, per cell"
  ),
  "tests/test_parallel.py::test_damping_keeps_chaos_finite_and_diagnose_predicts_it": (
    "test_deer_repairs_overflow_..., test_full_elk_damps_..."
  ),
  "tests/test_greff.py::test_check_cell[V]": _GREFF_KEPT,
  "tests/test_greff.py::test_check_cell[NIG]": _GREFF_KEPT,
  "tests/test_greff.py::test_check_cell[NFG]": _GREFF_KEPT,
  "tests/test_greff.py::test_check_cell[NOG]": _GREFF_KEPT,
  "tests/test_greff.py::test_check_cell[NIAF]": _GREFF_KEPT,
  "tests/test_greff.py::test_check_cell[NOAF]": _GREFF_KEPT,
  "tests/test_greff.py::test_check_cell[NP]": _GREFF_KEPT,
  "tests/test_greff.py::test_check_cell[CIFG]": _GREFF_KEPT,
  "tests/test_explore.py::test_explore_writes_one_self_contained_page": (
    "the page's parts, and the browser tests on a synthetic page"
  ),
}


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: minutes-long; `make test-slow` (and CI) runs it")


def pytest_collection_modifyitems(config, items):
  for item in items:
    if item.nodeid in SLOW or item.nodeid.split("[")[0] in SLOW:
      item.add_marker(pytest.mark.slow)


@pytest.fixture
def key():
  return jax.random.key(0)
