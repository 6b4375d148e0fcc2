"""The package's shape: no import cycle (imports inside functions included), dependencies pointing down, no module
taking another's private names, and one task registry that the config and the CLI agree with."""

import ast
import dataclasses
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ponder"

# who may import what (module prefixes; a rule on "ponder.tasks" covers the package and its submodules)
ONLY = {  # these import nothing from ponder but the listed modules
    "ponder.tasks": ("ponder", "ponder.config", "ponder.files", "ponder.progress", "ponder.tasks"),  # tasks know no
    #                                                            model or trainer (progress: the leaf of long builds)
    "ponder.models": ("ponder", "ponder.config", "ponder.models"),  # models know only config and their layers
    "ponder.run": ("ponder", "ponder.config", "ponder.files", "ponder.checkpoint", "ponder.distributed"),
    "ponder.runtime": ("ponder", "ponder.distributed"),
    "ponder.files": ("ponder",),  # the package root holds only UserError and the version
    "ponder.progress": (),
    "ponder.plots": ("ponder", "ponder.files"),  # figures take plain results (no task, model or run), written atomically
    "ponder.checkpoint": ("ponder", "ponder.config", "ponder.files"),
    "ponder.distributed": (),
    "ponder.config": ("ponder",),
}
NEVER = {  # these never import the listed modules
    "ponder.lm": ("ponder.trainer", "ponder.evaluate", "ponder.tasks", "ponder.act", "ponder.compare", "ponder.demo",
                  "ponder.bench"),  # the LM side stands on the run layer and config, not on the puzzle trainer
    "ponder.evaluate": ("ponder.trainer", "ponder.grpo"),  # the trainers may call the evaluator, never the reverse
}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(imported ponder module, name taken from it or None) for every import statement of a file, at any depth."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    if here == "ponder":  # the root's lazy facade (PEP 562 `__getattr__`: ponder.load, ponder.train) imports the
        # API on first use only; the root itself stays the bottom layer (UserError, IGNORE) every module imports
        tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if _under(a.name, "ponder")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not _under(base, "ponder"):
                continue
            for alias in node.names:  # `from ponder import checkpoint` imports the module ponder.checkpoint
                sub = f"{base}.{alias.name}"
                out.append((sub, None) if is_module(sub) else (base, alias.name))
    return out


def import_graph() -> dict[str, list[tuple[str, str | None]]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def cycles(graph: dict[str, list[tuple[str, str | None]]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (or a module importing itself), by Tarjan."""
    edges = {m: sorted({t for t, _ in targets if t in graph}) for m, targets in graph.items()}
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges[v]:
                found.append(sorted(group))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def violations(graph: dict[str, list[tuple[str, str | None]]]) -> list[str]:
    out = []
    for module, targets in graph.items():
        for target, name in targets:
            if target == module:
                continue
            for prefix, allowed in ONLY.items():
                if _under(module, prefix) and not any(target == a or (a != "ponder" and _under(target, a))
                                                      for a in allowed):
                    out.append(f"{module} imports {target} (it may import only {', '.join(allowed) or 'nothing'})")
            for prefix, banned in NEVER.items():
                if _under(module, prefix) and any(_under(target, b) for b in banned):
                    out.append(f"{module} imports {target}")
            if _under(target, "ponder.cli") and module != "ponder.__main__":
                out.append(f"{module} imports the CLI")
            if _under(target, "ponder.arguments") and module != "ponder.cli":  # the CLI's grammar is the CLI's
                out.append(f"{module} imports the CLI's grammar")
            if name and name.startswith("_") and name != "__version__":
                out.append(f"{module} takes the private name {target}.{name}")
    return out


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and graph["ponder.trainer"]  # the walk found the package and its imports
    assert cycles(graph) == []


def test_dependencies_point_down():
    assert violations(import_graph()) == []


def test_the_checks_can_fail():
    """The rules are live: a planted cycle, an upward import, a private name and a CLI import are all reported."""
    graph = import_graph()
    graph["ponder.tasks.sudoku"] = [*graph["ponder.tasks.sudoku"], ("ponder.models.trm", None)]
    graph["ponder.lm.train"] = [*graph["ponder.lm.train"], ("ponder.trainer", "_Meter")]
    graph["ponder.models.trm"] = [*graph["ponder.models.trm"], ("ponder.cli", None)]
    graph["ponder.evaluate"] = [*graph["ponder.evaluate"], ("ponder.trainer", None)]
    found = violations(graph)
    assert "ponder.tasks.sudoku imports ponder.models.trm (it may import only ponder, ponder.config, ponder.files, " \
           "ponder.progress, ponder.tasks)" in found
    assert "ponder.lm.train imports ponder.trainer" in found
    assert "ponder.lm.train takes the private name ponder.trainer._Meter" in found
    assert "ponder.models.trm imports the CLI" in found and "ponder.evaluate imports ponder.trainer" in found
    graph = import_graph()
    graph["ponder.evaluate"] = [*graph["ponder.evaluate"], ("ponder.trainer", "evaluate_model")]
    assert any({"ponder.evaluate", "ponder.trainer"} <= set(c) for c in cycles(graph))  # the cycle this package had


def test_imports_inside_functions_are_seen():
    """An import inside a function counts (that is how the old evaluate <-> train cycle hid)."""
    graph = import_graph()
    assert ("ponder.tasks", "prepare_data") in graph["ponder.compare"]  # imported inside compare()
    assert ("ponder.lm.model", "RecurrentLM") in graph["ponder.lm.train"]  # inside build_lm()


def test_task_registry_matches_config_and_cli():
    from ponder.arguments import build_parser
    from ponder.config import DataConfig
    from ponder.tasks import TASKS, Task

    sections = {f.name for f in dataclasses.fields(DataConfig) if dataclasses.is_dataclass(f.default_factory)}
    assert set(sections) == set(TASKS)  # every config section is a registered task and back
    for name, cls in TASKS.items():
        assert issubclass(cls, Task) and cls.name == name and cls.summary
        assert isinstance(getattr(DataConfig(), name), cls.config)
    data = next(a for a in build_parser()._subparsers._group_actions[0].choices["data"]._actions
                if a.dest == "task")
    assert list(data.choices) == list(TASKS)  # `ponder data <task>` for each, in registry order


@pytest.mark.parametrize("hook", ["identifiers", "extra_files", "strata", "aggregate", "augment", "score",
                                  "prompt_length", "decode", "reward", "answer_positions", "policy_refusal"])
def test_optional_hooks_are_part_of_the_protocol(hook):
    """The evaluator and the dataset builder call every hook without asking whether a task has it."""
    from ponder.tasks import Task

    assert callable(getattr(Task, hook))
    for path in (PACKAGE / "evaluate.py", PACKAGE / "tasks" / "__init__.py", PACKAGE / "trainer.py", PACKAGE / "grpo.py"):
        assert f'hasattr(task, "{hook}")' not in path.read_text()


def test_trainers_and_the_evaluator_use_only_the_task_protocol():
    """No reach into one task's own settings or attributes (the 1dCA layout, its answer positions, its k)."""
    for path in (PACKAGE / "evaluate.py", PACKAGE / "trainer.py", PACKAGE / "grpo.py", PACKAGE / "solve.py"):
        text = path.read_text()
        for private in ("task.cfg", "task.target_pos", "task.steps_ahead", "task.k_pos"):
            assert private not in text, f"{path.name} reads {private}"


def test_the_tests_check_finds_planted_imports() -> None:
    assert problems_in("from test_train import TINY\n") == ["imports the test module test_train"]
    assert problems_in("from ponder.run import _safe\n") == ["takes the private name ponder.run._safe"]
    assert problems_in("import test_cli as c\nfrom helpers import TINY\nfrom ponder.run import Loop\n") == [
        "imports the test module test_cli"]


def problems_in(source: str) -> list[str]:
    """What a test module's source imports that it should not: another test module, a private package name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"imports the test module {a.name}" for a in node.names if a.name.startswith("test_")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("test_"):
                found.append(f"imports the test module {node.module}")
            elif node.module.split(".")[0] == "ponder":
                found += [f"takes the private name {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_tests_share_helpers_not_each_other_or_private_names():
    """Shared test code lives in tests/helpers.py and conftest.py: no test module imports another or a private
    name of the package."""
    problems = [f"{path.name} {p}" for path in sorted(Path(__file__).parent.glob("test_*.py"))
                for p in problems_in(path.read_text())]
    assert problems == []


# which modules may test a model family or a training regime by name: the modules that own them (the config that
# defines and validates them, the family's model files, the one trainer that dispatches regimes, the GRPO regime,
# the official formats per family, the study whose recipe lists its members by family)
NAME_OWNERS = {
    "family": ("ponder.config", "ponder.models", "ponder.official", "ponder.official_step", "ponder.study",
               "ponder.lm.load"),
    "regime": ("ponder.config", "ponder.trainer", "ponder.grpo", "ponder.study"),
}


def name_tests(source: str) -> list[tuple[str, int]]:
    """(family|regime, line) of every comparison of a `...family` / `...regime` value with a string literal (==, !=,
    in, not in a tuple, list or set of literals)."""
    def named(node) -> str | None:
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        return name if name in NAME_OWNERS else None

    def literal(node) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and all(literal(e) for e in node.elts)

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for a, b in zip(sides, sides[1:]):
                name = named(a) or named(b)
                if name and (literal(a) or literal(b)):
                    found.append((name, node.lineno))
    return found


def test_families_and_regimes_are_tested_by_name_only_where_they_are_owned():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for name, line in name_tests(path.read_text()):
            if not any(_under(module, owner) for owner in NAME_OWNERS[name]):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: tests {name} by name")
    assert not offenders, "\n".join(offenders) + "\n(declare a capability on the model or the config instead)"


def test_the_name_check_finds_planted_tests():
    planted = 'if cfg.train.regime == "grpo": pass\nif model.family in ("armt", "trm"): pass\nif x == "grpo": pass\n'
    assert name_tests(planted) == [("regime", 1), ("family", 2)]
    assert name_tests('if "neox" != cfg.model.family: pass') == [("family", 1)]


def test_the_study_scales_are_yaml_read_by_the_config_system(tmp_path, monkeypatch):
    """The study's scales live in ponder/presets/studies/*.yaml (one preset system), typed by the config reader: an
    unknown key or a wrong type is one line naming the file."""
    from ponder import UserError, study

    assert study.SCALES["cpu"].sequence["neox"] == "ca1d-seq-cpu" and study.SCALES["cpu"].control_ks == (1, 2)
    assert study.SCALES["gpu"].depth == (8, 11) and study.SCALES["gpu"].member_overrides["urm"][0] == "model.loops=8"
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "ca1d-bad.yaml").write_text("recursive: ca1d-cpu\ndepht: [8]\n")
    monkeypatch.setattr(study, "PRESET_DIR", tmp_path)
    with pytest.raises(UserError, match="unknown config key 'ca1d-bad.yaml: depht'"):
        study.load_scale("bad")
    (tmp_path / "studies" / "ca1d-bad.yaml").write_text("depth: 8\n")
    with pytest.raises(UserError, match="expects a list"):
        study.load_scale("bad")
