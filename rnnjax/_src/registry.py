"""Cells by name: the one registry the command line, the applications and the
tests look cells up in.

A factory is any ``factory(hidden_size, **options) -> Cell``; the built-in
names are ``"elman"``, ``"gru"`` and ``"lstm"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnjax._src.cells.base import Cell
from rnnjax._src.cells.elman import elman
from rnnjax._src.cells.gru import gru
from rnnjax._src.cells.hmlstm import hmlstm
from rnnjax._src.cells.lstm import lstm
from rnnjax._src.cells.minrnn import mingru, minlstm
from rnnjax._src.cells.zoo import (
  cifg_lstm,
  indrnn,
  layer_norm_gru,
  layer_norm_lstm,
  mgu,
  orthogonal_rnn,
  peephole_lstm,
)

CellFactory = Callable[..., Cell]
"""``factory(hidden_size, **options) -> Cell``."""


def _hmlstm_two_levels(hidden_size: int, **options: Any) -> Cell:
  """``make_cell("hmlstm", H)``: a two-level HM-LSTM of H units per level (the
  char-LM builds ``--layers`` levels itself)."""
  return hmlstm((hidden_size, hidden_size), **options)


_REGISTRY: dict[str, CellFactory] = {
  "elman": elman,
  "gru": gru,
  "lstm": lstm,
  "mgu": mgu,
  "indrnn": indrnn,
  "peephole_lstm": peephole_lstm,
  "cifg_lstm": cifg_lstm,
  "layer_norm_lstm": layer_norm_lstm,
  "layer_norm_gru": layer_norm_gru,
  "orthogonal_rnn": orthogonal_rnn,
  "hmlstm": _hmlstm_two_levels,
  "mingru": mingru,
  "minlstm": minlstm,
}
# Not registered: lstm_projected, whose projection size P has no default.


def cell_names() -> tuple[str, ...]:
  """The registered cell names, sorted.

  Returns:
    The names `make_cell` accepts.

  Examples:
    >>> import rnnjax as rj
    >>> rj.cell_names()  # doctest: +NORMALIZE_WHITESPACE
    ('cifg_lstm', 'elman', 'gru', 'hmlstm', 'indrnn', 'layer_norm_gru', 'layer_norm_lstm',
     'lstm', 'mgu', 'mingru', 'minlstm', 'orthogonal_rnn', 'peephole_lstm')
  """
  return tuple(sorted(_REGISTRY))


def make_cell(name: str, hidden_size: int, **options: Any) -> Cell:
  """The cell registered as ``name``, built with ``hidden_size`` and ``options``.

  Args:
    name: a registered name (see `cell_names`).
    hidden_size: H.
    **options: passed to the factory (``activation=``, ``reset=``,
      ``recurrent_init=``, ...).

  Returns:
    The `rnnjax.Cell`.

  Raises:
    ValueError: ``name`` is not registered.

  Examples:
    >>> import rnnjax as rj
    >>> rj.make_cell("gru", 8, reset="after")
    rnnjax.gru(8, reset='after')
  """
  if name not in _REGISTRY:
    raise ValueError(
      f"unknown cell {name!r}; expected one of {list(cell_names())} "
      f"(or register yours with rnnjax.register_cell)"
    )
  return _REGISTRY[name](hidden_size, **options)


def register_cell(name: str, factory: CellFactory, *, overwrite: bool = False) -> None:
  """Make ``factory`` available as ``make_cell(name, H)`` (and so to ``--cell name``).

  Args:
    name: the name to register.
    factory: ``factory(hidden_size, **options) -> Cell``.
    overwrite: replace an existing registration instead of raising.

  Raises:
    TypeError: ``factory`` is not callable.
    ValueError: ``name`` is taken and ``overwrite`` is False.
  """
  if not callable(factory):
    raise TypeError(
      f"register_cell: factory for {name!r} must be callable, got {type(factory).__name__}"
    )
  if name in _REGISTRY and not overwrite:
    raise ValueError(
      f"register_cell: {name!r} is already registered; pass overwrite=True to replace it"
    )
  _REGISTRY[name] = factory
