"""The package's shape as a checked contract (docs/architecture.md): no import cycle among modules,
few levels, the report without torch, nothing at the top but the ground, the test cluster outside.
`lint-imports` (pyproject.toml) holds the layers' order; these hold what it does not express."""

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
MAX_LEVELS = 10


@functools.cache
def graph() -> dict[str, set[str]]:
    g = grimp.build_graph("expframe")
    modules = set(g.modules)
    return {m: {i for i in g.find_modules_directly_imported_by(m) if i in modules and i != m} for m in modules}


def chain(edges: dict[str, set[str]]) -> list[str]:
    """The longest chain of imports (the graph has no cycle: test_no_import_cycle)."""

    @functools.cache
    def longest(m: str) -> tuple[str, ...]:
        return (m, *max((longest(i) for i in edges[m]), key=len, default=()))

    return list(max((longest(m) for m in edges), key=len))


def test_no_import_cycle_among_modules():
    edges = graph()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for i in edges[m]:
            assert seen.get(i) != 1, f"import cycle: {' -> '.join(path[path.index(i) :] + [i])}"
            if i not in seen:
                visit(i, [*path, i])
        seen[m] = 2

    for m in sorted(edges):
        if m not in seen:
            visit(m, [m])


def test_imports_are_at_most_ten_levels_deep():
    longest = chain(graph())
    assert len(longest) <= MAX_LEVELS, " -> ".join(longest)


def test_the_package_top_holds_only_the_ground():
    top = sorted(p.name for p in (ROOT / "expframe").glob("*.py"))
    assert top == ["__init__.py", "build.py", "errors.py"]
    assert not list((ROOT / "expframe").rglob("local_cluster.py")), "the test cluster ships with the tests"


def test_every_sub_package_says_what_it_holds_and_may_import():
    for init in sorted((ROOT / "expframe").glob("*/__init__.py")):
        doc = init.read_text().split('"""')[1]
        assert "Imports" in doc or "imports" in doc, f"{init.parent.name}/__init__.py: say what it may import"


def test_the_report_imports_no_torch():
    code = "import sys, expframe.report.summary, expframe.cli.report; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_readme_is_read_in_five_minutes():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 300, len(lines)
    first = "\n".join(lines[:40])
    assert 'pip install -e ".[dev]"\npython train.py' in first and 'pip install -e ".[dev]"\npytest' in first
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    linked = set(re.findall(r"\(docs/([\w-]+\.md)\)", readme))
    assert linked <= pages and len(pages - linked) == 0, f"pages the README does not link: {pages - linked}"
    built = ("cross-validation", "image folders", "ResNets", "serving", "Optuna")
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for line in page.read_text().splitlines():
            if "not built yet" in line.lower():
                assert not any(b.lower() in line.lower() for b in built), f"{page.name}: {line}"


def test_the_documented_error_lines_are_what_the_commands_print():
    """Each `$ python train.py ...` line of the docs' error examples, run through the real entry point
    in this process, prints the `error:` line shown under it."""
    from tests.conftest import run_cli_in_process
    from tests.support.documentation import documentation

    shown = re.findall(r"^\$ python train\.py (.*)\n(error: .*)$", documentation(), flags=re.M)
    assert len(shown) >= 4
    for args, line in shown:
        status, err = run_cli_in_process(*shlex.split(args))
        assert (status, err.strip()) == (1, line), args
