"""The `rnnjax` command: help texts, argument errors, the jacobian command's
printed conditions, and the figures it writes."""

import argparse
import inspect
import json
import os

import numpy as np
import pytest

from rnnjax.apps import boundaries, cli, experiment, plot

COMMANDS = {"demo", "train", "generate", "experiment", "explore", "visualize", "jacobian"}


def _subcommands(parser):
  actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
  assert len(actions) == 1
  return dict(actions[0].choices)


def _squeeze(text):
  """``text`` without whitespace: argparse wraps help lines (also at hyphens)."""
  return "".join(text.split())


def test_every_option_has_help_that_states_its_default():
  subs = _subcommands(cli.build_parser())
  assert set(subs) == COMMANDS
  for name, sub in subs.items():
    page = _squeeze(sub.format_help())
    formatter = sub._get_formatter()
    options = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
    assert options, name
    for action in options:
      where = f"rnnjax {name} {'/'.join(action.option_strings) or action.dest}"
      assert action.help and action.help.strip(), f"{where} has no help"
      shown = formatter._expand_help(action)
      assert _squeeze(shown) in page, f"{where}: help not rendered"
      if not action.option_strings:
        continue  # a required positional has no default
      assert "default" in shown, f"{where}: help does not state its default: {shown!r}"
      if action.default not in (None, False):
        assert _squeeze(str(action.default)) in _squeeze(shown), (
          f"{where}: default {action.default!r} not in its help {shown!r}"
        )


def test_experiment_help_states_the_experiment_defaults():
  """--batch, --lr, --steps default to None and the task decides: the help
  must say what the experiment functions and DEFAULT_BUDGET actually use."""
  sub = _subcommands(cli.build_parser())["experiment"]
  helps = {a.dest: " ".join(a.help.split()) for a in sub._actions}
  one = inspect.signature(experiment.run_experiment).parameters
  s2s = inspect.signature(experiment.run_seq2seq).parameters
  hm = inspect.signature(boundaries.run_boundaries).parameters
  for dest in ("hidden", "batch", "lr"):
    for task, sig in (("copy", one), ("reverse", s2s), ("boundaries", hm)):
      # "<value> for ... <task>" with the value the task's function uses
      shown = helps[dest].split("(default: ")[1].rstrip(")")
      group = next(g for g in shown.split(", ") if task in g)
      assert group.startswith(f"{sig[dest].default} for"), (dest, task, shown)
  for task, budget in experiment.DEFAULT_BUDGET.items():
    amount = f"{budget['steps']} steps" if "steps" in budget else f"{budget['minutes']:g} minutes"
    assert amount in helps["steps"] and task in helps["steps"]
  assert cli._by_task({"adding": "3 minutes", "copy": "3 minutes", "reverse": "9 steps"}) == (
    "3 minutes for adding and copy, 9 steps for reverse"
  )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_jacobian_rejects_activation_for_gated_cells(cell, tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["jacobian", "--cell", cell, "--activation", "relu", "--out", str(tmp_path)])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert (
    f"rnnjax jacobian: error: --activation relu does not apply to --cell {cell}: its factory "
    "takes no activation (a gated cell's gates fix its nonlinearities); use --cell elman"
  ) in err
  assert not (tmp_path / "report.json").exists()


def _jacobian(tmp_path, capsys, *extra, T=40):
  out = tmp_path / "jac"
  assert cli.main(["jacobian", "--hidden", "16", "--T", str(T), "--out", str(out), *extra]) == 0
  report = json.loads((out / "report.json").read_text())
  return report, capsys.readouterr().out.splitlines()


def test_jacobian_default_run_prints_conditions_that_agree_with_the_verdict(tmp_path, capsys):
  """Orthogonal W with tanh: σ_max = 1 up to float32 rounding, which is 1/γ:
  neither of Pascanu's conditions holds, and the line says the bound decides
  nothing instead of 'explosion possible' beside a 'vanishing' verdict."""
  report, lines = _jacobian(tmp_path, capsys)
  pc, verdict = report["pascanu"], report["verdict"]
  assert pc["sigma_max"] == pytest.approx(1.0, rel=1e-5) and pc["threshold"] == 1.0
  assert not pc["vanishing_sufficient"] and not pc["exploding_necessary"]
  assert lines[0].startswith(f"rnnjax.elman(16, activation='tanh'): verdict {verdict};")
  assert lines[1] == (
    "Pascanu et al.: σ_max(W) = 1 ≈ 1/γ = 1 (relative tolerance 1e-05): the bound "
    f"decides nothing; the measured verdict ({verdict}) does"
  )
  assert "explosion" not in "\n".join(lines)


def test_jacobian_contracting_run_guarantees_vanishing_and_marks_underflow(tmp_path, capsys):
  """The tests run with float64 (conftest.py): a gradient falling by about 100×
  per step leaves float64's range (its entries underflow below 1e-308) before
  lag 200, as a float32 one does below 1e-38."""
  report, lines = _jacobian(tmp_path, capsys, "--gain", "0.01", T=200)
  assert report["verdict"] == "vanishing" and report["pascanu"]["vanishing_sufficient"]
  assert lines[1].startswith(
    "Pascanu et al.: σ_max(W) = 0.01 < 1/γ = 1: vanishing guaranteed for any input"
  )
  g = np.asarray(report["grad_norm_by_lag"])
  zero = plot.first_zero_lag(g)
  assert zero is not None and 0 < g[zero - 1] < plot.UNDERFLOW_NEAR
  assert lines[2].startswith(f"gradients by lag: the gradient norm computes to 0 from lag {zero}")


PASCANU = dict(gamma=1.0, threshold=1.0, vanishing_sufficient=False, exploding_necessary=False)


@pytest.mark.parametrize("verdict", ["vanishing", "stable", "exploding"])
def test_pascanu_text_has_three_cases_and_names_the_verdict(verdict):
  below = cli.pascanu_text(dict(PASCANU, sigma_max=0.9, vanishing_sufficient=True), verdict)
  equal = cli.pascanu_text(dict(PASCANU, sigma_max=1.0000002), verdict, rtol=1e-5)
  above = cli.pascanu_text(dict(PASCANU, sigma_max=1.5, exploding_necessary=True), verdict)
  assert "σ_max(W) = 0.9 < 1/γ = 1: vanishing guaranteed for any input" in below
  assert "‖J_t‖₂ ≤ γ·σ_max = 0.9 < 1" in below
  assert ("reads" in below) == (verdict != "vanishing")
  assert "σ_max(W) = 1 ≈ 1/γ = 1 (relative tolerance 1e-05): the bound decides nothing" in equal
  assert "σ_max(W) = 1.5 > 1/γ = 1: explosion possible but not guaranteed" in above
  for text in (equal, above):
    assert f"the measured verdict ({verdict})" in text
  for text in (below, equal):
    assert "explosion" not in text


def _report(grad_norm_by_lag):
  T = len(grad_norm_by_lag) - 1
  return dict(
    cell="rnnjax.elman(4, activation='tanh')",
    verdict="vanishing",
    log_product_norm_by_lag=list(-np.arange(1.0, T + 1)),
    grad_norm_by_lag=grad_norm_by_lag,
    step_spectral_norm=[0.5] * T,
  )


def _legend(ax):
  legend = ax.get_legend()
  return [t.get_text() for t in legend.get_texts()] if legend else []


def test_products_figure_labels_and_marks_an_underflowed_gradient():
  fig = plot.products_figure(_report([1.0, 1e-6, 1e-12, 3e-19, 0.0, 0.0]))
  ax = fig.axes[0]
  assert "log" in ax.get_ylabel() and "norm" in ax.get_ylabel()
  assert ax.get_title() == "rnnjax.elman(4, activation='tanh'): verdict vanishing"
  grad = ax.get_lines()[1]
  np.testing.assert_allclose(grad.get_ydata()[:4], [0, -6, -12, np.log10(3e-19)])
  assert np.isnan(grad.get_ydata()[4:]).all()
  marks = [line for line in ax.get_lines() if list(line.get_xdata()) == [4, 4]]
  assert len(marks) == 1
  text = " ".join(" ".join(_legend(ax)).split())
  assert "computes to 0 from lag 4 (last value 3.0e-19)" in text and "underflow" in text
  plot.pyplot().close(fig)


def test_products_figure_without_zeros_and_with_exact_zeros():
  fig = plot.products_figure(_report([1.0, 0.5, 0.25]))
  assert len(fig.axes[0].get_lines()) == 2 and len(_legend(fig.axes[0])) == 2
  plot.pyplot().close(fig)
  fig = plot.products_figure(_report([1.0, 0.5, 0.0]))  # not an underflow: a true zero
  text = " ".join(" ".join(_legend(fig.axes[0])).split())
  assert "exactly 0 from lag 2" in text and "underflow" not in text
  plot.pyplot().close(fig)


def test_loss_figure_draws_a_labelled_baseline():
  history = [dict(step=1, bpc=4.0), dict(step=10, bpc=2.0)]
  fig = plot.loss_figure(history, "bpc", "t", baseline=3.4594, baseline_label="uniform")
  lines = fig.axes[0].get_lines()
  assert len(lines) == 2
  np.testing.assert_allclose(lines[1].get_ydata(), [3.4594, 3.4594])
  assert _legend(fig.axes[0]) == ["training bpc", "uniform = 3.459"]
  plot.pyplot().close(fig)
  fig = plot.loss_figure(history)
  assert len(fig.axes[0].get_lines()) == 1 and fig.axes[0].get_legend() is None
  plot.pyplot().close(fig)


@pytest.mark.parametrize(
  ("argv", "message"),
  [
    (["--num-processes", "2"], "--num-processes and --process-id need --coordinator HOST:PORT"),
    (
      ["--coordinator", "localhost:1"],
      "--coordinator localhost:1 needs --num-processes N and --process-id I",
    ),
    (
      ["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2"],
      "--process-id 2 is out of range for --num-processes 2: use 0 to 1",
    ),
  ],
)
def test_train_names_what_a_multi_process_run_lacks(argv, message, tmp_path, capsys):
  """Checked before jax.distributed.initialize is called (it would wait for peers)."""
  with pytest.raises(SystemExit) as e:
    cli.main(["train", "--out", str(tmp_path), *argv])
  assert e.value.code == 2
  assert message in " ".join(capsys.readouterr().err.split())


def test_experiment_boundaries_refuses_devices(capsys):
  with pytest.raises(SystemExit):
    cli.main(["experiment", "boundaries", "--devices", "2", "--steps", "1"])
  assert "--devices 2 is not taken by the boundaries experiment yet" in capsys.readouterr().err


def _fails(argv, capsys):
  """``rnnjax argv`` in this process: its exit status and stderr."""
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  return e.value.code, capsys.readouterr().err


def test_an_out_that_cannot_be_created_is_one_line(tmp_path, capsys):
  """Issue 20: an --out under a file (or without permission) ended in a
  30-line traceback."""
  blocker = tmp_path / "file"
  blocker.write_text("x")
  text = tmp_path / "t.txt"
  text.write_text("abc\n" * 1000)
  code, err = _fails(["train", "--text", str(text), "--out", str(blocker / "run")], capsys)
  assert code == 2 and err.count("\n") == 1, err
  assert err.startswith(f"rnnjax train: error: {blocker / 'run'}: ") and "Traceback" not in err
  if os.geteuid() != 0:  # root writes anywhere
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = _fails(["train", "--text", str(text), "--out", str(locked / "run")], capsys)
    assert (code, err) == (2, f"rnnjax train: error: {locked / 'run'}: permission denied\n")


def test_missing_files_are_one_line(tmp_path, capsys):
  code, err = _fails(["generate", "--run", str(tmp_path / "none")], capsys)
  assert (code, err) == (
    2,
    f"rnnjax generate: error: checkpoint {tmp_path / 'none' / 'checkpoints'}: no such folder\n",
  )
  out = tmp_path / "new"
  code, err = _fails(["train", "--text", str(tmp_path / "no.txt"), "--out", str(out)], capsys)
  assert code == 2 and err.count("\n") == 1 and str(tmp_path / "no.txt") in err, err
  assert not out.exists()  # refused before the run folder is made


def test_any_failure_is_one_line_and_debug_shows_the_traceback(monkeypatch, tmp_path, capsys):
  def broken(args):
    raise RuntimeError("deep inside\nsecond line")

  parser = cli.build_parser()
  monkeypatch.setattr(cli, "build_parser", lambda: parser)
  parser.set_defaults(func=broken)
  for command in (["jacobian"], ["generate", "--run", str(tmp_path)]):
    sub = _subcommands(parser)[command[0]]
    sub.set_defaults(func=broken)
    code, err = _fails(command, capsys)
    assert (code, err) == (
      2,
      f"rnnjax {command[0]}: error: RuntimeError: deep inside second line (rnnjax --debug "
      "shows where)\n",
    )
    for debug in (["--debug", *command], [*command, "--debug"]):
      code, err = _fails(debug, capsys)
      assert code == 2 and err.startswith("Traceback (most recent call last):"), err
      assert 'raise RuntimeError("deep inside' in err
      assert err.endswith(
        f"rnnjax {command[0]}: error: RuntimeError: deep inside second line "
        "(rnnjax --debug shows where)\n"
      )


def test_ctrl_c_is_one_line(monkeypatch, capsys):
  def interrupted(args):
    raise KeyboardInterrupt

  parser = cli.build_parser()
  monkeypatch.setattr(cli, "build_parser", lambda: parser)
  _subcommands(parser)["jacobian"].set_defaults(func=interrupted)
  assert _fails(["jacobian"], capsys) == (130, "rnnjax jacobian: interrupted\n")
