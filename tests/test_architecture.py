"""The shape of the code: imports point one way (no circle, local imports included), and
docs/architecture.md names every module under harness/ with its job."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The harness modules ``path`` imports, anywhere in it (a function's local import is
    still an edge: it is how circles hide). ``from pkg import sub`` is an edge to the
    submodule, ``from pkg import name`` one to the package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in known:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out - {module_name(path)}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [name for name, path in modules().items()
               if str(path.relative_to(ROOT)) not in page and f"`{name}`" not in page]
    assert missing == [], f"docs/architecture.md does not list {missing}"


def test_the_cycle_finder_finds_a_circle(tmp_path, monkeypatch):
    """The finder itself: two modules importing each other are a circle."""
    pkg = tmp_path / "harness"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from harness import b\n")
    (pkg / "b.py").write_text("from harness.a import f\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    edges = graph()
    assert edges["harness.a"] == {"harness.b"} and edges["harness.b"] == {"harness.a"}


BEGIN, END = "<!-- import picture: begin -->", "<!-- import picture: end -->"


def import_picture() -> str:
    """Which harness module imports which (every import, local ones included), one line a
    module, as the architecture page shows it."""
    lines = ["| module | imports |", "|---|---|"]
    for name, deps in sorted(graph().items()):
        short = ", ".join(f"`{d.removeprefix('harness.')}`" for d in sorted(deps)) or "–"
        lines.append(f"| `{name.removeprefix('harness.') or 'harness'}` | {short} |")
    return "\n".join(lines)


def test_the_import_picture_is_current():
    page = (ROOT / "docs" / "architecture.md").read_text()
    shown = page.split(BEGIN)[1].split(END)[0].strip() if BEGIN in page else ""
    assert shown == import_picture(), "the import picture is stale: run `python tests/test_architecture.py`"


if __name__ == "__main__":  # rewrite the page's import picture
    path = ROOT / "docs" / "architecture.md"
    page = path.read_text()
    head, rest = page.split(BEGIN)
    path.write_text(f"{head}{BEGIN}\n{import_picture()}\n{END}{rest.split(END)[1]}")
