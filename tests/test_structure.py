"""The code's shape: no import cycles (function-level imports included), and each room imports only
the rooms below it (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "flows")

# room -> the rooms it may import (besides itself and tasks.core); a module's room is its longest matching
# prefix. Top to bottom: flows; the build; the recipe (which assembles every part's settings); what publish
# writes; the stages; what earlier versions published; models, sources, downloads and the demo corpus;
# media; similarity search; the core.
BELOW_STAGES = {"tasks.models", "tasks.sources", "tasks.fetch", "tasks.media", "tasks.similar"}
ROOMS = {
    "flows": {"tasks"},
    "tasks": set(),  # the package itself: nothing but rooms
    "tasks.build": {"tasks.recipe", "tasks.publish", "tasks.stages", "tasks.published", "tasks.demo"} | BELOW_STAGES,
    "tasks.recipe": {"tasks.publish", "tasks.stages"} | BELOW_STAGES,
    "tasks.publish": {"tasks.stages", "tasks.published"} | BELOW_STAGES,
    "tasks.stages": {"tasks.published"} | BELOW_STAGES,
    "tasks.published": {"tasks.media", "tasks.similar"},
    "tasks.models": set(),
    "tasks.sources": {"tasks.media"},
    "tasks.fetch": {"tasks.media"},
    "tasks.demo": set(),
    "tasks.media": {"tasks.similar"},
    "tasks.similar": set(),
    "tasks.core": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file, functions included (imports for type
    checkers only, under `if TYPE_CHECKING:`, run never and are left out)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for_types = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in for_types:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from . import storage` imports the module storage; `from .x import name` imports x
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def room(module: str) -> str:
    return max((r for r in ROOMS if module == r or module.startswith(r + ".")), key=len)


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_each_room_imports_only_the_rooms_below_it():
    wrong = []
    for module, targets in graph().items():
        here = room(module)
        allowed = {here} | ROOMS[here] | ({"tasks.core"} if here != "tasks.core" else set())
        allowed |= {r for r in ROOMS if any(r == a or r.startswith(a + ".") for a in allowed)}
        wrong += [f"{module} -> {t}" for t in sorted(targets) if room(t) not in allowed]
    assert wrong == []


def test_stages_are_plain_python():
    """tasks/ never imports prefect or ray: stages run under any runner."""
    offenders = []
    for name, path in modules().items():
        if not name.startswith("tasks"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in ("prefect", "prefect_ray", "ray")]
    assert offenders == []


def test_every_media_kind_is_registered_and_found_by_its_extensions():
    from tasks.media.kinds import KINDS, MediaKind, modality_of

    assert list(KINDS) == ["image", "audio", "video", "document"]  # the order tars and cards list them in
    assert all(issubclass(kind, MediaKind) and kind.name == name for name, kind in KINDS.items())
    # a kind with files decodes them; one without (a document) says what clean records instead
    assert all(kind.clean is not MediaKind.clean for kind in KINDS.values() if kind.has_media)
    assert all(kind.facts is not MediaKind.facts for kind in KINDS.values() if not kind.has_media)
    assert [modality_of(n) for n in ("a.JPG", "b.flac", "c.webm", "d.txt", "noext")] == [
        "image",
        "audio",
        "video",
        None,
        None,
    ]


def test_no_code_outside_the_kinds_branches_on_a_composite_kind():
    """What a document does differently lives in its kind (tasks/media/kinds/document.py): nowhere else in the
    build is its name compared with an item's modality."""
    found = []
    for name, path in modules().items():
        if name.startswith(("tasks.media.kinds", "tasks.sources")):  # a source names the kind of its rows
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                literals = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                if "document" in literals:
                    found.append(f"{name}:{node.lineno}")
    assert found == []


def test_every_bench_script_imports_and_names_only_what_exists():
    """`make bench` is not run by the tests: each script is imported, and every project name it imports
    (most inside its functions, which importing the script does not run) must exist, so a move cannot break
    one silently."""
    import importlib
    import importlib.util

    scripts = sorted((REPO / "bench").glob("*.py"))
    named = 0
    for script in scripts:
        spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGES):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    named += 1
                    found = hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}")
                    assert found, f"bench/{script.name}: {alias.name} is not in {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(PACKAGES):
                        named += 1
                        importlib.import_module(alias.name)
    assert len(scripts) >= 5 and named >= 20  # the check saw the scripts' imports


def test_no_function_is_longer_than_sixty_lines():
    """A function a reader holds in their head at once: a longer one is cut where its parts have names."""
    long = [
        f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60
    ]
    assert long == []
