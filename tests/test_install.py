"""The package as users get it: no import cycles, and a built wheel that works without the source tree."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zoo", "registry")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source (functions included)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a module: the deepest project module named
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_import_cycles_and_every_module_imports_in_dependency_order():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    order, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d, stack + [d])
        state[m] = "done"
        order.append(m)

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert "zoo.layers" not in graph["registry._core"]  # the registry does not know its clients
    code = "import importlib\nfor m in %r:\n    importlib.import_module(m)\n" % order
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def test_no_module_over_400_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_no_task_name_is_compared_outside_the_task_registry():
    import re

    from zoo.data import task_names

    names = "|".join(task_names())
    pattern = re.compile(rf"""(==|!=|\bin\b)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    hits = []
    for m, p in _modules().items():
        if m.startswith("zoo.data.tasks"):
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_a_built_wheel_works_without_the_source_tree(tmp_path):
    """pip wheel -> pip install --target -> run `zoo` from there, in a folder with no configs/ of its own."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("zoo_mixers-*.whl")
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ZOO_CONFIG_PATH"}
    env.update(PYTHONPATH=str(site), ZOO_DATA_CACHE=str(tmp_path / "cache"))

    def zoo(*argv):
        return subprocess.run([str(site / "bin" / "zoo"), *argv], capture_output=True, text=True, env=env, cwd=work,
                              timeout=600)

    where = subprocess.run([sys.executable, "-c", "import zoo, zoo.config as c; print(zoo.__file__); "
                            "print(c.find_config('experiments', 'listops_small'))"],
                           capture_output=True, text=True, env=env, cwd=work, timeout=120)
    zoo_file, config = where.stdout.split()
    assert zoo_file.startswith(str(site)) and config.startswith(str(site)), where.stdout  # not the source tree
    out = zoo("describe", "las")
    assert out.returncode == 0 and "LaS attention" in out.stdout, out.stderr
    out = zoo("train", "listops_small", "--max-steps", "2", "--out", str(work / "runs"), "data.generate.n_train=200",
              "data.generate.n_val=50", "data.generate.n_test=50")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "stopped at step 2 of" in out.stdout and (work / "runs").is_dir()  # zoo train's few lines


def test_config_field_needs_no_torch():
    """zoo.fields (config_field, used by every task and data config) imports no torch: loaded on its own,
    outside the package's __init__, it leaves torch unimported."""
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('fields', {str(ROOT / 'zoo' / 'fields.py')!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "assert callable(m.config_field)\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
    data = [p for p in (ROOT / "zoo" / "data").rglob("*.py") if "from zoo.base import config_field" in p.read_text()]
    assert not data, f"import config_field from zoo.fields in {data}"
