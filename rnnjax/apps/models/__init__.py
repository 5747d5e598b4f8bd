"""Models built from rnnjax's layers: the character LM, a sequence classifier
and a bidirectional tagger, and an encoder-decoder."""

from rnnjax.apps.models.heads import SequenceModel as SequenceModel
from rnnjax.apps.models.heads import classifier as classifier
from rnnjax.apps.models.heads import tagger as tagger
from rnnjax.apps.models.lm import CharLM as CharLM
from rnnjax.apps.models.lm import CharLMParams as CharLMParams
from rnnjax.apps.models.lm import char_lm as char_lm
from rnnjax.apps.models.seq2seq import Seq2Seq as Seq2Seq
from rnnjax.apps.models.seq2seq import seq2seq as seq2seq

__all__ = [
  "CharLM",
  "CharLMParams",
  "Seq2Seq",
  "SequenceModel",
  "char_lm",
  "classifier",
  "seq2seq",
  "tagger",
]
