"""Every ```python block of README.md runs on its own as a doctest.

Each block gets fresh globals, so a block that leans on an earlier block's
imports or variables fails here as it would for a reader who copies it alone;
and JAX's default configuration (float32), not the suite's float64.
"""

import doctest
import re
from pathlib import Path

import jax

README = Path(__file__).resolve().parents[1] / "README.md"
OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
FENCE = re.compile(r"^(\s*)```\s*python\s*$")
CLOSE = re.compile(r"^\s*```\s*$")


def python_blocks(text: str) -> list[tuple[int, str]]:
  """``(line, source)`` of each ```python block; ``line`` is the fence's, 1-based."""
  blocks, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    m = FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    indent, start, body = len(m.group(1)), i + 1, []
    i += 1
    while i < len(lines) and not CLOSE.match(lines[i]):
      body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
      i += 1
    if i == len(lines):
      raise ValueError(f"line {start}: ```python block is never closed")
    blocks.append((start, "\n".join(body) + "\n"))
    i += 1
  return blocks


def run_blocks(text: str, filename: str) -> tuple[int, list[str]]:
  """Run every ```python block as a doctest in fresh globals.

  Returns the number of blocks and one message per failing block, each naming
  the block's line; doctest's own report names the failing example's line.
  """
  parser = doctest.DocTestParser()
  problems = []
  blocks = python_blocks(text)
  for line, source in blocks:
    where = f"{filename}:{line}: ```python block"
    test = parser.get_doctest(source, {}, f"{filename}:{line}", filename, line)
    if not test.examples:
      problems.append(f"{where} has no >>> prompts; write it as a doctest")
      continue
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    result = runner.run(test, out=report.append, clear_globs=True)
    if result.failed:
      problems.append(f"{where} fails {result.failed} of {result.attempted} examples:\n")
      problems[-1] += "".join(report)
  return len(blocks), problems


def test_readme_python_blocks_are_doctests_that_run_alone():
  # as a reader runs them: JAX's defaults, not the suite's float64 and strict ranks
  with jax.enable_x64(False), jax.numpy_rank_promotion("allow"):
    n, problems = run_blocks(README.read_text(encoding="utf-8"), README.name)
  assert n > 0, "README.md has no ```python block"
  assert not problems, "\n\n".join(problems)


SAMPLE = """\
# Title

```python
>>> import math
>>> math.sqrt(16)
4.0
>>> list(range(30))
[0, 1, 2, ..., 29]
>>> print("a   b")
a b
```

Text in between.

```python
>>> math.pi
3.14...
```

```python
x = 1  # no prompts
```

```bash
$ not python
```

```python
>>> 1 + 1
3
```
"""


def test_run_blocks_on_a_known_good_and_known_bad_markdown():
  blocks = python_blocks(SAMPLE)
  assert [line for line, _ in blocks] == [3, 15, 20, 28]
  n, problems = run_blocks(SAMPLE, "sample.md")
  assert n == 4 and len(problems) == 3
  # the first block passes: its outputs need ELLIPSIS and NORMALIZE_WHITESPACE
  assert not any(p.startswith("sample.md:3:") for p in problems)
  # the second uses the first block's import: fresh globals make it fail
  assert problems[0].startswith("sample.md:15: ```python block fails 1 of 1 examples")
  assert "NameError: name 'math' is not defined" in problems[0]
  assert 'File "sample.md", line 16' in problems[0]
  assert problems[1] == "sample.md:20: ```python block has no >>> prompts; write it as a doctest"
  assert problems[2].startswith("sample.md:28: ```python block fails 1 of 1 examples")
  assert (
    'File "sample.md", line 29' in problems[2] and "Expected:\n    3\nGot:\n    2" in problems[2]
  )
