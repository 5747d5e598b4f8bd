"""The cell registry: rj.make_cell, rj.cell_names and rj.register_cell."""

import jax
import pytest

import rnnjax as rj
from rnnjax._src import registry
from tests.helpers import assert_trees_close

BUILTINS = (
  "cifg_lstm",
  "elman",
  "gru",
  "hmlstm",
  "indrnn",
  "layer_norm_gru",
  "layer_norm_lstm",
  "lstm",
  "mgu",
  "mingru",
  "minlstm",
  "orthogonal_rnn",
  "peephole_lstm",
)


@pytest.fixture
def scratch_registry(monkeypatch):
  """A copy of the registry for one test; the real one is restored afterwards."""
  before = dict(registry._REGISTRY)
  monkeypatch.setattr(registry, "_REGISTRY", dict(before))
  yield
  monkeypatch.undo()
  restored = registry._REGISTRY
  assert restored == before and rj.cell_names() == BUILTINS


def _same_cell(a, b, I=3):
  """Equal description, and equal params and step on the same key and inputs."""
  assert (a.name, a.hidden_size, a.gates, a.state_size, a.options, a.activation) == (
    b.name,
    b.hidden_size,
    b.gates,
    b.state_size,
    b.options,
    b.activation,
  )
  pa, pb = a.init(jax.random.key(0), I), b.init(jax.random.key(0), I)
  assert_trees_close(pa, pb, rtol=0, atol=0)
  x = jax.random.normal(jax.random.key(1), (2, I))
  carry = jax.tree.map(lambda c: c + 0.5, a.initial_carry((2,)))
  assert_trees_close(a.step(pa, carry, x), b.step(pb, carry, x), rtol=0, atol=0)


def test_cell_names_lists_the_builtins():
  assert rj.cell_names() == BUILTINS


def test_make_cell_builds_the_named_cell_with_its_options():
  _same_cell(rj.make_cell("elman", 4, activation="relu"), rj.elman(4, "relu"))
  _same_cell(rj.make_cell("gru", 4, reset="after"), rj.gru(4, reset="after"))
  _same_cell(rj.make_cell("lstm", 4, forget_bias=0.0), rj.lstm(4, forget_bias=0.0))
  cell = rj.make_cell("elman", 4, activation="sigmoid")
  assert cell.activation.name == "sigmoid" and cell.activation.gamma == 0.25
  assert repr(rj.make_cell("gru", 8, reset="after")) == "rnnjax.gru(8, reset='after')"
  assert rj.make_cell("lstm", 4).init(jax.random.key(0), 3).b[4:8].tolist() == [1.0] * 4


def test_make_cell_unknown_name_names_the_choices():
  with pytest.raises(
    ValueError,
    match=r"unknown cell 'rnn'; expected one of \['cifg_lstm', 'elman', 'gru', .*, "
    r"'peephole_lstm'\] \(or register yours with rnnjax.register_cell\)",
  ):
    rj.make_cell("rnn", 8)


@pytest.mark.usefixtures("scratch_registry")
def test_register_cell_adds_and_refuses_duplicates():
  calls = []

  def tied(hidden_size, **options):
    calls.append((hidden_size, options))
    return rj.elman(hidden_size, **options)

  rj.register_cell("tied", tied)
  assert rj.cell_names() == tuple(sorted((*BUILTINS, "tied")))
  _same_cell(rj.make_cell("tied", 5, activation="linear"), rj.elman(5, "linear"))
  assert calls == [(5, {"activation": "linear"})]
  with pytest.raises(
    ValueError, match=r"'tied' is already registered; pass overwrite=True to replace it"
  ):
    rj.register_cell("tied", rj.gru)
  with pytest.raises(ValueError, match=r"'lstm' is already registered"):
    rj.register_cell("lstm", rj.gru)
  assert rj.make_cell("lstm", 4).name == "lstm"  # a refusal changes nothing
  rj.register_cell("lstm", rj.gru, overwrite=True)
  assert rj.make_cell("lstm", 4).name == "gru"
  with pytest.raises(TypeError, match=r"factory for 'x' must be callable, got int"):
    rj.register_cell("x", 3)
  assert "x" not in rj.cell_names()
