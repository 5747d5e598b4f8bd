"""Models built from rnnjax layers."""

from rnnjax.models.charlm import CharLM, CharLMParams, char_lm

__all__ = ["CharLM", "CharLMParams", "char_lm"]
