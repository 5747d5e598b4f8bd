"""The cells: each a factory returning a `Cell` NamedTuple of pure functions."""

from rnnjax.cells.base import Cell
from rnnjax.cells.elman import ElmanParams, elman
from rnnjax.cells.gru import GRUParams, gru
from rnnjax.cells.lstm import LSTMCarry, LSTMParams, lstm

__all__ = ["Cell", "ElmanParams", "GRUParams", "LSTMCarry", "LSTMParams",
           "elman", "gru", "lstm"]
