"""rnnjax: recurrent neural networks in JAX you can trust, take apart and measure.

The core library. It imports jax and numpy only; the applications built on
it (the char-LM, training loops, experiments, reports and the ``rnnjax``
command) live in `rnnjax.apps`, and nothing here imports from there.

* Cells: `elman`, `gru`, `lstm` (or `make_cell` by name), each a `Cell`, a
  NamedTuple of pure functions over NamedTuple params and carries.
* Running: `scan` (with the hand-written BPTT `bptt_scan` as its default
  backward), `flip`; layers: `stacked`, `stacked_step`, `bidirectional`,
  `init_stacked`, `dropout`, `embedding`.
* Modules: `rnnjax.init` (initialisers), `rnnjax.jacobian` (gradient-flow
  measurements), `rnnjax.tbptt` (truncated BPTT), `rnnjax.tasks` (synthetic
  long-range tasks), `rnnjax.interop` (weights from PyTorch and flax).

The implementation lives in the private ``rnnjax._src``; import from here.
Shapes use ``T`` time, ``B`` batch, ``I`` input, ``H`` hidden, ``S`` flattened
state, ``k`` gate blocks, ``V`` vocabulary.
"""

from rnnjax import init as init
from rnnjax import interop as interop
from rnnjax import jacobian as jacobian
from rnnjax import tasks as tasks
from rnnjax import tbptt as tbptt
from rnnjax._src.activations import Activation as Activation
from rnnjax._src.bptt import bptt_scan as bptt_scan
from rnnjax._src.bptt import reference_elman_grads as reference_elman_grads
from rnnjax._src.cells.base import Cell as Cell
from rnnjax._src.cells.elman import ElmanParams as ElmanParams
from rnnjax._src.cells.elman import elman as elman
from rnnjax._src.cells.gru import GRUParams as GRUParams
from rnnjax._src.cells.gru import gru as gru
from rnnjax._src.cells.lstm import LSTMCarry as LSTMCarry
from rnnjax._src.cells.lstm import LSTMParams as LSTMParams
from rnnjax._src.cells.lstm import lstm as lstm
from rnnjax._src.custom import custom_cell as custom_cell
from rnnjax._src.layers import Embedding as Embedding
from rnnjax._src.layers import EmbeddingParams as EmbeddingParams
from rnnjax._src.layers import bidirectional as bidirectional
from rnnjax._src.layers import dropout as dropout
from rnnjax._src.layers import embedding as embedding
from rnnjax._src.layers import init_stacked as init_stacked
from rnnjax._src.layers import stacked as stacked
from rnnjax._src.layers import stacked_step as stacked_step
from rnnjax._src.registry import cell_names as cell_names
from rnnjax._src.registry import make_cell as make_cell
from rnnjax._src.registry import register_cell as register_cell
from rnnjax._src.regularizers import ZoneoutParams as ZoneoutParams
from rnnjax._src.regularizers import locked_dropout as locked_dropout
from rnnjax._src.regularizers import weight_drop as weight_drop
from rnnjax._src.regularizers import zoneout as zoneout
from rnnjax._src.regularizers import zoneout_inputs as zoneout_inputs
from rnnjax._src.scan import flip as flip
from rnnjax._src.scan import scan as scan
from rnnjax._src.typing import Array as Array
from rnnjax._src.typing import Carry as Carry
from rnnjax._src.typing import Params as Params
from rnnjax._src.typing import PyTree as PyTree

__version__ = "0.1.0"

__all__ = [
  "Activation",
  "Array",
  "Carry",
  "Cell",
  "ElmanParams",
  "Embedding",
  "EmbeddingParams",
  "GRUParams",
  "LSTMCarry",
  "LSTMParams",
  "Params",
  "PyTree",
  "ZoneoutParams",
  "bidirectional",
  "bptt_scan",
  "cell_names",
  "custom_cell",
  "dropout",
  "elman",
  "embedding",
  "flip",
  "gru",
  "init",
  "init_stacked",
  "interop",
  "jacobian",
  "locked_dropout",
  "lstm",
  "make_cell",
  "reference_elman_grads",
  "register_cell",
  "scan",
  "stacked",
  "stacked_step",
  "tasks",
  "tbptt",
  "weight_drop",
  "zoneout",
  "zoneout_inputs",
]
