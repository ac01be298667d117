"""The layers of the code base hold: imports only go down, never in a circle, and an import
inside a function is of an optional package outside the project and says why it waits.

Layers, lowest first (a module may import its own layer and the ones below):
mro/paths.py (where the repository's files are) and mro/messages.py (how errors quote
values): they import nothing of ours <- models <- rewards <- mro utilities <- mro/sampling
<- mro/training <- mro/method/search <- mro/method/finetuning (with the experiment config
and model loading) <- mro/evaluation (with the options table and `mro sample`) <-
mro/sweeps <- the CLI. experiments/ sits on
top of everything. The imports are read from the source (every `import` statement, at
module level or in a function), so nothing is executed.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "rewards", "mro", "experiments")

# (layer, module prefixes), lowest first; the longest matching prefix places a module.
LAYERS = (
    ("mro/paths", ("mro.paths",)),
    ("messages", ("mro.messages",)),  # bounded quotes of values in errors, for every layer
    ("models", ("models",)),
    ("rewards", ("rewards",)),
    ("mro utilities", ("mro", "mro.files", "mro.locks", "mro.progress")),
    ("mro/sampling", ("mro.sampling",)),
    ("mro/training", ("mro.training", "mro.plan")),
    ("mro/method/search", ("mro.method", "mro.method.search")),
    ("mro/method/finetuning", ("mro.method.finetuning", "mro.config", "mro.loading")),
    ("mro/evaluation", ("mro.evaluation", "mro.options", "mro.sample")),
    ("mro/sweeps", ("mro.sweeps",)),
    ("cli", ("mro.cli",)),
    ("experiments", ("experiments",)),
)


def module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
  return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = project_modules()

# Project modules that import an optional package at their top (an adapter to it): a verb
# may import one inside a function, with a comment, so that the rest of the program starts
# without the package (and without its import time).
OPTIONAL_ADAPTERS = {"mro.evaluation.lm_harness": "lm-evaluation-harness, extra [lm-eval]"}


def layer_of(module: str) -> int:
  best, rank = -1, None
  for i, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
        best, rank = len(prefix), i
  if rank is None:
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")
  return rank


def imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
  """(imported project module, line, inside a function) for every import of `path`."""
  tree = ast.parse(path.read_text())
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  out = []

  def visit(node, in_function: bool):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                 ast.Lambda))
      names = []
      if isinstance(child, ast.Import):
        names = [a.name for a in child.names]
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:
          up = package.split(".")[:len(package.split(".")) - child.level + 1]
          base = ".".join(up + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                 for a in child.names]
      for name in names:
        out.append((name, child.lineno, in_function))
      visit(child, nested)

  visit(tree, False)
  return out


def edges() -> list[tuple[str, str, int, bool]]:
  """(importer, imported, line, inside a function), project modules only."""
  out = []
  for module, path in MODULES.items():
    for name, line, in_function in imports(module, path):
      while name and name not in MODULES:  # `import a.b.c` names a.b.c, a module
        name = name.rpartition(".")[0]
      if name and name != module:
        out.append((module, name, line, in_function))
  return out


def upward_imports(graph) -> list[str]:
  return [f"{MODULES[a].relative_to(ROOT)}:{line} imports {b} ({LAYERS[layer_of(b)][0]}, "
          f"above {LAYERS[layer_of(a)][0]})"
          for a, b, line, _ in graph if layer_of(b) > layer_of(a)]


def cycles(graph) -> list[list[str]]:
  """The import cycles: strongly connected components of more than one module."""
  succ: dict[str, set[str]] = {m: set() for m in MODULES}
  for a, b, _, _ in graph:
    succ[a].add(b)
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def connect(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in succ[v]:
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in MODULES:
    if v not in index:
      connect(v)
  return found


def test_every_module_of_the_project_has_a_layer():
  for module in MODULES:
    layer_of(module)


def test_imports_only_go_down_the_layers():
  assert upward_imports(edges()) == []


def test_a_planted_upward_import_is_found(tmp_path):
  """The test sees what it guards: rewards importing the sampler, sampling importing the
  search, and the search importing fine-tuning are each reported."""
  planted = [("rewards.verification", "mro.sampling.sampler", 1, False),
             ("mro.sampling.sampler", "mro.method.search.mro_search", 1, False),
             ("mro.method.search.runner", "mro.method.finetuning.rollouts", 1, True)]
  assert len(upward_imports(planted)) == 3


def test_no_module_imports_itself_through_others():
  assert cycles(edges()) == []
  planted = [("mro.training.step", "mro.loading", 1, True)]  # loading imports the step
  assert cycles(edges() + planted)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_an_import_inside_a_function_is_an_optional_package_that_says_why(module):
  path = MODULES[module]
  lines = path.read_text().splitlines()
  tree = ast.parse(path.read_text())
  for fn in ast.walk(tree):
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    for node in ast.walk(fn):
      if not isinstance(node, (ast.Import, ast.ImportFrom)):
        continue
      names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
          [node.module or "."]
      where = f"{path.relative_to(ROOT)}:{node.lineno}"
      relative = getattr(node, "level", 0) > 0
      if isinstance(node, ast.ImportFrom) and not relative:
        names = [n if f"{n}.{a.name}" not in MODULES else f"{n}.{a.name}"
                 for n in names for a in node.names]
      project = [n for n in names if n.split(".")[0] in PACKAGES]
      assert not relative and all(n in OPTIONAL_ADAPTERS for n in project), \
          f"{where}: a project module imported inside a function; import it at the top"
      assert "#" in lines[node.lineno - 1], \
          f"{where}: say in a comment why {names} is imported only here"
