"""The rooms: no import cycle inside nlpforge/, and one table that says what each model family
implies, every reference in it importable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nlpforge.families import FAMILIES, Family, ModelFamily, family
from nlpforge.lazy import Unavailable, import_object

PACKAGE = Path(__file__).resolve().parent.parent / "nlpforge"

#: (importer, imported) edges allowed to close a cycle, each with its reason. Empty: none.
ALLOWED: dict[tuple[str, str], str] = {}


def module_graph(package: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports, at any level (function bodies included)."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        base = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    root = base
                    for _ in range(node.level - 1):
                        root = root.rpartition(".")[0]
                    source = f"{root}.{node.module}" if node.module else root
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                           for a in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target) if target.split(".")[0] == package.name else None
                if found and found != module and (module, found) not in ALLOWED:
                    graph[module].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_inside_the_package():
    graph = module_graph(PACKAGE)
    assert len(graph) > 90 and "nlpforge.serving.served" in graph["nlpforge.serving.state"]
    assert cycles(graph) == []


def test_the_cycle_finder_sees_function_level_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    assert cycles(module_graph(package)) == [["pkg.a", "pkg.sub.b"]]


def test_every_family_has_one_entry_and_every_reference_imports():
    assert sorted(FAMILIES) == sorted(m.value for m in ModelFamily)
    for member in ModelFamily:
        spec = family(member)
        assert spec is family(member.value) and spec.member is member
        for field in ("exporter", "runtime", "scorer", "stepper", "served", "contract_check"):
            ref = getattr(spec, field)
            if ref is not None:
                assert callable(import_object(ref)), (member, field)
        from nlpforge.testing.tiny import BUILDERS

        assert spec.tiny_model in BUILDERS
    assert [f.value for f in FAMILIES.values() if f.generates] == ["decoder", "encoder-decoder"]


def test_a_missing_reference_is_reported_not_raised_as_an_import_error():
    with pytest.raises(Unavailable, match="nlpforge.no_such_module is not installed"):
        import_object("nlpforge.no_such_module:thing")
    with pytest.raises(Unavailable, match="nlpforge.families has no nothing"):
        import_object("nlpforge.families:nothing")
    broken = Family(ModelFamily.ENCODER, exporter="nlpforge.no_such:export", runtime="x:y",
                    scorer=None, stepper=None, served="x:y", tiny_model="bert",
                    contract_check="x:y")
    from nlpforge.errors import ManifestError, ModelDirError

    with pytest.raises(ModelDirError, match="cannot handle encoder models .*upgrade nlpforge"):
        broken.load("exporter")
    with pytest.raises(ModelDirError, match="has no scorer"):
        broken.load("scorer")
    with pytest.raises(ManifestError, match="unknown model family 'vision'"):
        family("vision")
