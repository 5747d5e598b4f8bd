"""Long-range synthetic tasks with their analytic baselines (Arjovsky et al. 2016).

* **Adding problem**: two length-T channels: values ``U[0, 1]`` and a marker
  with one 1 in each half; the target is the sum of the two marked values.
  Predicting the mean, 1, gives ``MSE = Var(X₁ + X₂) = 2/12 = 1/6``.
* **Copy memory**: 10 symbols from an alphabet of 8, ``T − 1`` blanks, a
  delimiter, 10 blanks; the output is blank for ``T + 10`` steps, then the 10
  symbols. A memoryless model outputs blanks, then uniform guesses:
  ``CE = 10 · ln 8 / (T + 20)`` per step.
"""

from rnnjax._src.tasks import ADDING_BASELINE as ADDING_BASELINE
from rnnjax._src.tasks import BLANK as BLANK
from rnnjax._src.tasks import COPY_CLASSES as COPY_CLASSES
from rnnjax._src.tasks import COPY_LENGTH as COPY_LENGTH
from rnnjax._src.tasks import COPY_SYMBOLS as COPY_SYMBOLS
from rnnjax._src.tasks import DELIMITER as DELIMITER
from rnnjax._src.tasks import DIGIT0 as DIGIT0
from rnnjax._src.tasks import REVERSE_VOCAB as REVERSE_VOCAB
from rnnjax._src.tasks import Batch as Batch
from rnnjax._src.tasks import Seq2SeqBatch as Seq2SeqBatch
from rnnjax._src.tasks import adding as adding
from rnnjax._src.tasks import adding_baseline as adding_baseline
from rnnjax._src.tasks import copy_baseline as copy_baseline
from rnnjax._src.tasks import copy_memory as copy_memory
from rnnjax._src.tasks import held_out as held_out
from rnnjax._src.tasks import reverse_digits as reverse_digits

__all__ = [
  "ADDING_BASELINE",
  "BLANK",
  "COPY_CLASSES",
  "COPY_LENGTH",
  "COPY_SYMBOLS",
  "DELIMITER",
  "DIGIT0",
  "REVERSE_VOCAB",
  "Batch",
  "Seq2SeqBatch",
  "adding",
  "adding_baseline",
  "copy_baseline",
  "copy_memory",
  "held_out",
  "reverse_digits",
]
