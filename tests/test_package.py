"""The package's structure: a core that needs jax and numpy only, applications
that use nothing but the core's public API, and a documented public surface."""

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rnnjax as rj

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "rnnjax"
PUBLIC_MODULES = ("init", "jacobian", "interop", "tbptt", "tasks", "host", "reference")
APPS_ONLY = ("optax", "tqdm", "matplotlib", "flax", "chex")


def _module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
  """Every module an import in ``source`` (the text of ``module``) may load.

  Imports anywhere in the file count, lazy ones inside functions too; relative
  imports are resolved; ``from a import b`` counts as ``a`` and ``a.b``, since b
  may be a submodule; ``importlib.import_module("...")`` with a literal counts.
  """
  package = module.split(".") if is_package else module.split(".")[:-1]
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = package[: len(package) - node.level + 1] if node.level else []
      mod = ".".join([*base, *([node.module] if node.module else [])])
      found.add(mod)
      found.update(f"{mod}.{a.name}" for a in node.names)
    elif (
      isinstance(node, ast.Call)
      and isinstance(node.func, (ast.Attribute, ast.Name))
      and getattr(node.func, "attr", getattr(node.func, "id", None))
      in ("import_module", "__import__")
      and node.args
      and isinstance(node.args[0], ast.Constant)
      and isinstance(node.args[0].value, str)
    ):
      found.add(node.args[0].value)
  return found


def _file_imports(path: Path) -> set[str]:
  return imported_modules(path.read_text(), _module_name(path), path.name == "__init__.py")


def _names(modules: set[str], prefix: str) -> list[str]:
  return sorted(m for m in modules if m == prefix or m.startswith(prefix + "."))


def _core_files() -> list[Path]:
  return sorted(
    p for p in PKG.rglob("*.py") if (PKG / "apps") not in p.parents and p != PKG / "__main__.py"
  )


def test_import_finder_resolves_every_form():
  """The finder behind the two tests below sees each way of naming a module."""
  src = "\n".join(
    [
      "import rnnjax.apps.cli",
      "from rnnjax import apps",
      "from .._src import scan",
      "from . import io",
      "def lazy():",
      "  from rnnjax._src.cells import base",
      "  importlib.import_module('rnnjax.apps.plot')",
    ]
  )
  assert {
    "rnnjax.apps.cli",
    "rnnjax.apps",
    "rnnjax.apps._src.scan",  # `..` of rnnjax.apps.models.lm is rnnjax.apps
    "rnnjax.apps.models.io",
    "rnnjax._src.cells.base",
    "rnnjax.apps.plot",
  } <= imported_modules(src, "rnnjax.apps.models.lm")
  assert "rnnjax._src" in imported_modules("from .._src import x", "rnnjax.apps.cli")
  assert "rnnjax._src" in imported_modules("from ._src import x", "rnnjax", is_package=True)
  assert _names({"rnnjax.applications", "rnnjax.apps2"}, "rnnjax.apps") == []


def test_core_imports_nothing_from_apps():
  files = _core_files()
  assert {PKG / "__init__.py", PKG / "jacobian.py", PKG / "_src" / "scan.py"} <= set(files)
  offending = {str(p.relative_to(ROOT)): _names(_file_imports(p), "rnnjax.apps") for p in files}
  assert {k: v for k, v in offending.items() if v} == {}
  # the command's entry point is excluded because it is the one that does
  assert _names(_file_imports(PKG / "__main__.py"), "rnnjax.apps")


def test_apps_use_only_the_public_api():
  files = sorted((PKG / "apps").rglob("*.py"))
  assert PKG / "apps" / "cli.py" in files and PKG / "apps" / "models" / "lm.py" in files
  offending = {str(p.relative_to(ROOT)): _names(_file_imports(p), "rnnjax._src") for p in files}
  assert {k: v for k, v in offending.items() if v} == {}
  assert any("rnnjax" in _file_imports(p) for p in files)  # they do import the core


def test_src_imports_no_public_module():
  """Imports run one way: the implementations live in rnnjax._src and the public
  modules re-export them; nothing in _src imports a public module back."""
  files = sorted((PKG / "_src").rglob("*.py"))
  assert PKG / "_src" / "jacobian.py" in files and PKG / "_src" / "cells" / "lstm.py" in files
  public = {f"rnnjax.{p.stem}" for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")}
  public |= {"rnnjax", "rnnjax.apps"}
  assert {"rnnjax.jacobian", "rnnjax.init", "rnnjax.nnx"} <= public
  offending = {
    str(p.relative_to(ROOT)): sorted(
      m for m in _file_imports(p) if m in public or m.startswith("rnnjax.apps.")
    )
    for p in files
  }
  assert {k: v for k, v in offending.items() if v} == {}


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_only_re_export(name):
  """A public module holds no implementation: its body is its docstring, imports
  from rnnjax._src, and ``__all__``."""
  body = ast.parse((PKG / f"{name}.py").read_text()).body
  kinds = {type(node).__name__ for node in body[1:]}
  assert isinstance(body[0], ast.Expr) and kinds <= {"ImportFrom", "Assign"}
  for node in body[1:]:
    if isinstance(node, ast.ImportFrom):
      assert node.module.startswith("rnnjax._src."), node.module
    else:
      assert [t.id for t in node.targets] == ["__all__"]


def test_import_rnnjax_loads_no_application_dependency():
  code = (
    "import json, sys, rnnjax; "
    "print(json.dumps({'file': rnnjax.__file__, 'modules': sorted(sys.modules)}))"
  )
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
  )
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert Path(out["file"]).resolve() == PKG / "__init__.py"
  modules = set(out["modules"])
  assert {"jax", "numpy", "rnnjax.jacobian", "rnnjax._src.scan"} <= modules  # the check sees
  loaded = {name: _names(modules, name) for name in (*APPS_ONLY, "rnnjax.apps")}
  assert {k: v for k, v in loaded.items() if v} == {}


def _docstring(name: str) -> str | None:
  """The docstring of ``rnnjax.<name>`` where it is defined: a module's, a
  def's or class's own, or the string literal after an alias's assignment.

  Read from the source, because ``__doc__`` accepts what is not one: a
  NamedTuple without a docstring gets ``"Name(fields)"``, and an alias such as
  ``Carry = Any`` has the docstring of `typing.Any`."""
  obj = getattr(rj, name)
  if isinstance(obj, type(rj)):
    return obj.__doc__
  origin = None
  for node in ast.parse((PKG / "__init__.py").read_text()).body:
    if isinstance(node, ast.ImportFrom):
      for a in node.names:
        if (a.asname or a.name) == name:
          origin = (node.module, a.name)
  assert origin is not None, f"rnnjax.{name} is not imported in rnnjax/__init__.py"
  module, attr = origin
  path = ROOT.joinpath(*module.split("."))
  path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
  body = ast.parse(path.read_text()).body
  for i, node in enumerate(body):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == attr:
      return ast.get_docstring(node)
    targets = (
      node.targets
      if isinstance(node, ast.Assign)
      else [node.target]
      if isinstance(node, ast.AnnAssign)
      else []
    )
    if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
      after = body[i + 1] if i + 1 < len(body) else None
      if (
        isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
      ):
        return after.value.value
      return None
  return None


def test_public_names_exist_and_are_documented():
  assert len(rj.__all__) == len(set(rj.__all__)) and "scan" in rj.__all__
  missing = [n for n in rj.__all__ if not hasattr(rj, n)]
  assert missing == []
  undocumented = [n for n in rj.__all__ if not (_docstring(n) or "").strip()]
  assert undocumented == []


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_module_imports(name):
  mod = importlib.import_module(f"rnnjax.{name}")
  assert getattr(rj, name) is mod and (mod.__doc__ or "").strip()
  assert [n for n in getattr(mod, "__all__", ()) if not hasattr(mod, n)] == []


def test_py_typed_is_shipped():
  assert (PKG / "py.typed").is_file()
  tomllib = pytest.importorskip("tomllib")  # Python 3.11+
  config = tomllib.loads((ROOT / "pyproject.toml").read_text())
  assert "py.typed" in config["tool"]["setuptools"]["package-data"]["rnnjax"]


def test_pip_install_brings_jax_numpy_and_threadpoolctl_only():
  """Packaging like optax: the applications' and flax's dependencies are extras, and the
  test extra brings both so that `make test` runs the whole suite. The core adds
  threadpoolctl (pure Python), which `rnnjax.jacobian`'s LAPACK loops import when they run."""
  tomllib = pytest.importorskip("tomllib")  # Python 3.11+
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

  def names(reqs):
    return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip() for r in reqs}

  assert names(project["dependencies"]) == {"jax", "jaxlib", "numpy", "threadpoolctl"}
  extras = project["optional-dependencies"]
  assert {"optax", "orbax-checkpoint", "tqdm", "matplotlib"} <= names(extras["apps"])
  assert names(extras["flax"]) == {"flax"}
  assert "rnnjax[apps,flax]" in extras["test"]
  makefile = (ROOT / "Makefile").read_text()
  assert "pip install -q -e '.[apps]'" in makefile and "pip install -q -e '.[test]'" in makefile


def test_apps_without_their_extra_fail_with_one_line_naming_it(monkeypatch):
  monkeypatch.delitem(sys.modules, "rnnjax.apps", raising=False)
  monkeypatch.setitem(sys.modules, "optax", None)  # as if not installed
  monkeypatch.setitem(sys.modules, "tqdm", None)
  with pytest.raises(ImportError) as e:
    importlib.import_module("rnnjax.apps")
  assert str(e.value) == (
    "rnnjax.apps needs optax, tqdm, which the core does not install: pip install 'rnnjax[apps]'"
  )
  assert e.value.__cause__ is None and e.value.__suppress_context__


@pytest.mark.parametrize(
  ("name", "module"), [("tune_host_allocator", "host"), ("reference_elman_grads", "reference")]
)
def test_moved_names_keep_a_deprecated_alias(name, module):
  """Moved to a named submodule; the top-level name warns and calls it, for one release."""
  assert name not in rj.__all__
  moved = getattr(importlib.import_module(f"rnnjax.{module}"), name)
  alias = getattr(rj, name)
  assert alias.__wrapped__ is moved
  warning = rf"rnnjax.{name} moved to rnnjax.{module}.{name}"
  if module == "host":  # the alias passes its arguments on: the moved function refuses this
    with pytest.warns(DeprecationWarning, match=warning), pytest.raises(ValueError, match="0"):
      alias(mmap_threshold=0)
    return
  import jax
  import jax.numpy as jnp

  params = rj.elman(2).init(jax.random.key(0), 1)
  args = (params, jnp.ones((2, 1)), jnp.zeros(2), jnp.ones((2, 2)))
  with pytest.warns(DeprecationWarning, match=warning):
    got = alias(*args)
  assert all(bool((g == w).all()) for g, w in zip(got, moved(*args), strict=True))
