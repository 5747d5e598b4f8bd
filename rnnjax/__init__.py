"""rnnjax: recurrent neural networks in JAX you can trust, take apart and measure.

The core library. It imports jax and numpy only; the applications built on
it (the char-LM, training loops, experiments, reports and the ``rnnjax``
command) live in `rnnjax.apps`, and nothing here imports from there.

* Cells: `elman`, `gru`, `lstm` (or `make_cell` by name), each a `Cell`:
  three pure functions over NamedTuple params and carries, with declared
  properties. Your own: `custom_cell`, with optional hints (`ProjectedStep`,
  `MatmulStep`, `BackwardStep`, `BackwardRows`, `ClosedJacobian`,
  `ClosedDiagonal`) held to the plain step by `check_cell`.
* Running: `scan` (with the hand-written BPTT `bptt_scan` as its default
  backward), `flip`; layers: `stacked`, `stacked_step`, `bidirectional`,
  `init_stacked`, `dropout`, `embedding`.
* Modules: `rnnjax.init` (initialisers), `rnnjax.jacobian` (gradient-flow
  measurements), `rnnjax.tbptt` (truncated BPTT), `rnnjax.tasks` (synthetic
  long-range tasks), `rnnjax.interop` (weights from PyTorch and flax),
  `rnnjax.reference` (the lecture's formulas, literally), `rnnjax.host`
  (process-wide switches of the CPU runtime).

The implementation lives in the private ``rnnjax._src``; import from here.
Shapes use ``T`` time, ``B`` batch, ``I`` input, ``H`` hidden, ``S`` flattened
state, ``k`` gate blocks, ``V`` vocabulary.
"""

from rnnjax import host as host
from rnnjax import init as init
from rnnjax import interop as interop
from rnnjax import jacobian as jacobian
from rnnjax import reference as reference
from rnnjax import tasks as tasks
from rnnjax import tbptt as tbptt
from rnnjax._src.activations import Activation as Activation
from rnnjax._src.bptt import bptt_scan as bptt_scan
from rnnjax._src.cells.base import Cell as Cell
from rnnjax._src.cells.conv_lstm import ConvLSTMParams as ConvLSTMParams
from rnnjax._src.cells.conv_lstm import conv_lstm as conv_lstm
from rnnjax._src.cells.elman import ElmanParams as ElmanParams
from rnnjax._src.cells.elman import elman as elman
from rnnjax._src.cells.greff import GREFF_VARIANTS as GREFF_VARIANTS
from rnnjax._src.cells.greff import GreffFGRCarry as GreffFGRCarry
from rnnjax._src.cells.greff import GreffLSTMParams as GreffLSTMParams
from rnnjax._src.cells.greff import greff_blocks as greff_blocks
from rnnjax._src.cells.greff import greff_lstm as greff_lstm
from rnnjax._src.cells.gru import GRUParams as GRUParams
from rnnjax._src.cells.gru import gru as gru
from rnnjax._src.cells.hmlstm import HMLSTMCarry as HMLSTMCarry
from rnnjax._src.cells.hmlstm import HMLSTMLayerParams as HMLSTMLayerParams
from rnnjax._src.cells.hmlstm import HMLSTMOutputParams as HMLSTMOutputParams
from rnnjax._src.cells.hmlstm import HMLSTMParams as HMLSTMParams
from rnnjax._src.cells.hmlstm import SlopeAnnealing as SlopeAnnealing
from rnnjax._src.cells.hmlstm import hmlstm as hmlstm
from rnnjax._src.cells.hmlstm import hmlstm_output as hmlstm_output
from rnnjax._src.cells.hmlstm import init_hmlstm_output as init_hmlstm_output
from rnnjax._src.cells.hmlstm import set_slope as set_slope
from rnnjax._src.cells.hmlstm import slope_annealing as slope_annealing
from rnnjax._src.cells.hmlstm import stochastic_step as hmlstm_stochastic_step
from rnnjax._src.cells.lstm import LSTMCarry as LSTMCarry
from rnnjax._src.cells.lstm import LSTMParams as LSTMParams
from rnnjax._src.cells.lstm import lstm as lstm
from rnnjax._src.cells.minrnn import MinGRUParams as MinGRUParams
from rnnjax._src.cells.minrnn import MinLSTMParams as MinLSTMParams
from rnnjax._src.cells.minrnn import mingru as mingru
from rnnjax._src.cells.minrnn import minlstm as minlstm
from rnnjax._src.cells.zoo import CIFGParams as CIFGParams
from rnnjax._src.cells.zoo import IndRNNParams as IndRNNParams
from rnnjax._src.cells.zoo import LayerNormGRUParams as LayerNormGRUParams
from rnnjax._src.cells.zoo import LayerNormLSTMParams as LayerNormLSTMParams
from rnnjax._src.cells.zoo import LSTMProjectedParams as LSTMProjectedParams
from rnnjax._src.cells.zoo import MGUParams as MGUParams
from rnnjax._src.cells.zoo import OrthogonalRNNParams as OrthogonalRNNParams
from rnnjax._src.cells.zoo import PeepholeLSTMParams as PeepholeLSTMParams
from rnnjax._src.cells.zoo import cifg_lstm as cifg_lstm
from rnnjax._src.cells.zoo import indrnn as indrnn
from rnnjax._src.cells.zoo import layer_norm_gru as layer_norm_gru
from rnnjax._src.cells.zoo import layer_norm_lstm as layer_norm_lstm
from rnnjax._src.cells.zoo import lstm_projected as lstm_projected
from rnnjax._src.cells.zoo import mgu as mgu
from rnnjax._src.cells.zoo import orthogonal_rnn as orthogonal_rnn
from rnnjax._src.cells.zoo import peephole_lstm as peephole_lstm
from rnnjax._src.conformance import CellCheck as CellCheck
from rnnjax._src.conformance import CellCheckError as CellCheckError
from rnnjax._src.conformance import check_cell as check_cell
from rnnjax._src.custom import custom_cell as custom_cell
from rnnjax._src.deprecated import reference_elman_grads as reference_elman_grads
from rnnjax._src.deprecated import tune_host_allocator as tune_host_allocator
from rnnjax._src.hints import BackwardRows as BackwardRows
from rnnjax._src.hints import BackwardStep as BackwardStep
from rnnjax._src.hints import ClosedDiagonal as ClosedDiagonal
from rnnjax._src.hints import ClosedJacobian as ClosedJacobian
from rnnjax._src.hints import LocalBackward as LocalBackward
from rnnjax._src.hints import MatmulStep as MatmulStep
from rnnjax._src.hints import ProjectedStep as ProjectedStep
from rnnjax._src.hints import RecurrentMatmul as RecurrentMatmul
from rnnjax._src.layers import Embedding as Embedding
from rnnjax._src.layers import EmbeddingParams as EmbeddingParams
from rnnjax._src.layers import bidirectional as bidirectional
from rnnjax._src.layers import dropout as dropout
from rnnjax._src.layers import embedding as embedding
from rnnjax._src.layers import init_stacked as init_stacked
from rnnjax._src.layers import stacked as stacked
from rnnjax._src.layers import stacked_step as stacked_step
from rnnjax._src.parallel import ParallelInfo as ParallelInfo
from rnnjax._src.parallel import parallel_scan as parallel_scan
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
  "GREFF_VARIANTS",
  "Activation",
  "Array",
  "BackwardRows",
  "BackwardStep",
  "CIFGParams",
  "Carry",
  "Cell",
  "CellCheck",
  "CellCheckError",
  "ClosedDiagonal",
  "ClosedJacobian",
  "ConvLSTMParams",
  "ElmanParams",
  "Embedding",
  "EmbeddingParams",
  "GRUParams",
  "GreffFGRCarry",
  "GreffLSTMParams",
  "HMLSTMCarry",
  "HMLSTMLayerParams",
  "HMLSTMOutputParams",
  "HMLSTMParams",
  "IndRNNParams",
  "LSTMCarry",
  "LSTMParams",
  "LSTMProjectedParams",
  "LayerNormGRUParams",
  "LayerNormLSTMParams",
  "LocalBackward",
  "MGUParams",
  "MatmulStep",
  "MinGRUParams",
  "MinLSTMParams",
  "OrthogonalRNNParams",
  "ParallelInfo",
  "Params",
  "PeepholeLSTMParams",
  "ProjectedStep",
  "PyTree",
  "RecurrentMatmul",
  "SlopeAnnealing",
  "ZoneoutParams",
  "bidirectional",
  "bptt_scan",
  "cell_names",
  "check_cell",
  "cifg_lstm",
  "conv_lstm",
  "custom_cell",
  "dropout",
  "elman",
  "embedding",
  "flip",
  "greff_blocks",
  "greff_lstm",
  "gru",
  "hmlstm",
  "hmlstm_output",
  "hmlstm_stochastic_step",
  "host",
  "indrnn",
  "init",
  "init_hmlstm_output",
  "init_stacked",
  "interop",
  "jacobian",
  "layer_norm_gru",
  "layer_norm_lstm",
  "locked_dropout",
  "lstm",
  "lstm_projected",
  "make_cell",
  "mgu",
  "mingru",
  "minlstm",
  "orthogonal_rnn",
  "parallel_scan",
  "peephole_lstm",
  "reference",
  "register_cell",
  "scan",
  "set_slope",
  "slope_annealing",
  "stacked",
  "stacked_step",
  "tasks",
  "tbptt",
  "weight_drop",
  "zoneout",
  "zoneout_inputs",
]
