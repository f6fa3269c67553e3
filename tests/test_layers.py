"""The layers of the code run one way (docs/architecture.md).

The import graph is read from the source with `ast`: every `import` and
`from … import` in every module of the five apps except migrations, those
inside functions and `if TYPE_CHECKING:` blocks included, since each one ties
the importer to the imported all the same.

    config < accounts < orgs < {webhooks, sandboxes}

A module may import its own app and the layers below it; webhooks and
sandboxes never import each other; no two modules of one app import each
other, directly or round a longer circle.
"""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"config": 0, "accounts": 1, "orgs": 2, "webhooks": 3, "sandboxes": 3}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for app in LAYER:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.relative_to(ROOT).parts:
                found[_module_name(path)] = path
    return found


def _imported(node: ast.AST, importer: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The modules of ours one import statement names (`from pkg import module` names the module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = importer.split(".")
            package = package if is_package else package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        names = []
        for alias in node.names:
            names.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    else:
        return []
    ours = []
    for name in names:
        if name.split(".")[0] not in LAYER:
            continue
        # `from a.b import c` of something that is not a module (a name in it): its module.
        assert name in modules or name.rpartition(".")[0] in modules, f"{importer} imports {name}, which is gone"
        ours.append(name if name in modules else name.rpartition(".")[0])
    return ours


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py", modules):
                if target != name:
                    graph[name].add(target)
    return graph


def _app(module: str) -> str:
    return module.split(".")[0]


def _upward(graph) -> set[tuple[str, str]]:
    return {(importer, imported) for importer, targets in graph.items() for imported in targets
            if LAYER[_app(imported)] > LAYER[_app(importer)]}


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    # a module-level import, a `from package import module`, and an import inside a function
    assert "sandboxes.providers.base" in graph["sandboxes.providers.snapshot_store"]
    assert "sandboxes.providers.commands" in graph["sandboxes.providers.local_sandbox"]
    assert "sandboxes.providers.docker_sandbox" in graph["sandboxes.providers"]


def test_no_import_runs_up_the_layers():
    assert _upward(import_graph()) == set(), "imports that run up: config < accounts < orgs < webhooks, sandboxes"


def test_webhooks_and_sandboxes_import_neither_each_other():
    graph = import_graph()
    across = {(importer, imported) for importer, targets in graph.items() for imported in targets
              if {_app(importer), _app(imported)} == {"webhooks", "sandboxes"}}
    assert across == set()


def test_no_circle_of_imports():
    assert _cycles(import_graph()) == []
