"""rnnjax: recurrent neural networks in JAX you can trust, take apart and measure."""

from rnnjax import init
from rnnjax import interop
from rnnjax import jacobian
from rnnjax import tasks
from rnnjax import tbptt
from rnnjax.bptt import bptt_scan
from rnnjax.bptt import reference_elman_grads
from rnnjax.cells import Cell
from rnnjax.cells import ElmanParams
from rnnjax.cells import GRUParams
from rnnjax.cells import LSTMCarry
from rnnjax.cells import LSTMParams
from rnnjax.cells import elman
from rnnjax.cells import gru
from rnnjax.cells import lstm
from rnnjax.layers import Embedding
from rnnjax.layers import EmbeddingParams
from rnnjax.layers import bidirectional
from rnnjax.layers import dropout
from rnnjax.layers import embedding
from rnnjax.layers import init_stacked
from rnnjax.layers import stacked
from rnnjax.scan import flip
from rnnjax.scan import scan

__version__ = "0.1.0"

__all__ = [
    "Cell", "ElmanParams", "Embedding", "EmbeddingParams", "GRUParams", "LSTMCarry",
    "LSTMParams", "bidirectional", "bptt_scan", "dropout", "elman", "embedding", "flip", "gru",
    "init", "init_stacked", "interop", "jacobian", "lstm", "reference_elman_grads", "scan",
    "stacked", "tasks", "tbptt",
]
