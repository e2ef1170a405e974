"""No Rust module uses another in a circle (issue 19): the module dependencies of each crate, read
from its sources, form no cycle.

A module depends on another when its code (tests left out) names a path into it: `use
crate::a::b`, `super::x`, `self::child::f`, a child module by name, or an item that a module
re-exports (`crate::Error` is `error::Error` through `lib.rs`'s `pub use`). Declaring a child
(`mod child;`) is no dependency, and neither is a child's use of what its parent modules define
(`super::Item`): a parent is the shared ground of its children, as Rust's module tree intends.
So the circles are those through siblings and cousins, e.g. `volume` <-> `orientation`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CRATES = ["core", "torch", "app", "cli", "python-common", "python", "python-libtorch"]

Module = tuple[str, ...]
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
RAW_STRING = re.compile(r'b?r(#*)"')
CHAR = re.compile(r"b?'(\\.[^']*|[^\\'])'")


def strip_code(text: str) -> str:
    """`text` with comments, string and char literals blanked out (braces then balance)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif raw := RAW_STRING.match(text, i):
            close = '"' + raw.group(1)
            end = text.find(close, raw.end())
            i = n if end < 0 else end + len(close)
            out.append('""')
        elif c == '"' or text.startswith('b"', i):
            i += 2 if c == "b" else 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif char := CHAR.match(text, i):
            i = char.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_tests(code: str) -> str:
    """`code` without its `#[cfg(test)]` modules."""
    while m := re.search(
        r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", code
    ):
        depth, i = 1, m.end()
        while depth and i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        code = code[: m.start()] + code[i:]
    return code


def crate_modules(src: Path) -> dict[Module, str]:
    """Each module of the crate under `src`, by path, with its code (tests left out)."""
    modules: dict[Module, str] = {}
    for path in sorted(src.rglob("*.rs")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] in ("lib", "main", "mod"):
            parts = parts[:-1]
        if parts and parts[0] == "bin":
            continue  # binaries are crates of their own
        modules[parts] = without_tests(strip_code(path.read_text()))
    # Test modules in files of their own (`#[cfg(test)] mod tests;`).
    for module, code in list(modules.items()):
        for m in re.finditer(rf"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+({IDENT})\s*;", code):
            modules.pop((*module, m.group(3)), None)
    return modules


def use_paths(tree: str) -> Iterator[str]:
    """The flat paths of one use tree, e.g. `a::{b, c::{d, e}}` gives a::b, a::c::d, a::c::e."""
    tree = re.sub(rf"\s+as\s+{IDENT}", "", tree)
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        yield tree
        return
    prefix, body = tree[:brace], tree[brace + 1 : tree.rindex("}")]
    depth, start = 0, 0
    for i, c in enumerate(body + ","):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            item = body[start:i]
            start = i + 1
            if item:
                for path in use_paths(item):
                    yield prefix + path if path != "self" else prefix.rstrip(":")


def paths_in(code: str) -> Iterator[tuple[str, bool]]:
    """Every path the code names: (path, is it a `pub use` re-export)."""
    uses = re.compile(r"(\bpub(\([^)]*\))?\s+)?\buse\s+([^;]+);")
    for m in uses.finditer(code):
        for path in use_paths(m.group(3)):
            yield path.removeprefix("::"), m.group(1) is not None
    rest = uses.sub(" ", code)
    for m in re.finditer(rf"(?<![\w:$])({IDENT}(?:::{IDENT})+)", rest):
        yield m.group(1), False


def dependencies(modules: dict[Module, str]) -> dict[Module, set[Module]]:
    children = {m: {c[-1] for c in modules if c[:-1] == m and c} for m in modules}

    def start(module: Module, head: str) -> Module | None:
        if head == "crate":
            return ()
        if head == "self":
            return module
        if head == "super":
            return module[:-1]
        if head in children[module]:
            return (*module, head)
        return None

    def resolve(module: Module, path: str) -> tuple[Module, list[str]] | None:
        segments = path.split("::")
        at = start(module, segments[0])
        if at is None:
            return None
        rest = segments[1:]
        while rest and rest[0] == "super":
            at, rest = at[:-1], rest[1:]
        while rest and (*at, rest[0]) in modules:
            at, rest = (*at, rest[0]), rest[1:]
        return at, rest

    # Re-exports: (module, name) -> the module the name really lives in.
    reexports: dict[tuple[Module, str], Module] = {}
    for module, code in modules.items():
        for path, public in paths_in(code):
            if public and (found := resolve(module, path)) and found[1]:
                reexports[(module, found[1][-1])] = found[0]

    graph: dict[Module, set[Module]] = {m: set() for m in modules}
    for module, code in modules.items():
        for path, _ in paths_in(code):
            found = resolve(module, path)
            if found is None:
                continue
            target, rest = found
            for _ in range(8):  # follow re-export chains
                if (
                    rest
                    and (target, rest[0]) in reexports
                    and reexports[(target, rest[0])] != target
                ):
                    target = reexports[(target, rest[0])]
                else:
                    break
            # A child may use what its parents define (`super::Item`): they are the shared
            # ground of their children, as Rust's module tree intends.
            if target != module[: len(target)]:
                graph[module].add(target)
    return graph


def cycles(graph: dict[Module, set[Module]]) -> list[list[Module]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[Module, int] = {}
    low: dict[Module, int] = {}
    stack: list[Module] = []
    found: list[list[Module]] = []

    def visit(v: Module) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
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


def name(module: Module) -> str:
    return "::".join(("crate", *module))


@pytest.mark.parametrize("crate", CRATES)
def test_no_module_uses_another_in_a_circle(crate: str) -> None:
    graph = dependencies(crate_modules(REPO / "rust" / crate / "src"))
    circles = [
        " <-> ".join(name(m) for m in c)
        + ": "
        + "; ".join(f"{name(a)} -> {name(b)}" for a in c for b in sorted(graph[a]) if b in c)
        for c in cycles(graph)
    ]
    assert circles == [], "\n".join(circles)


def test_the_reader_sees_the_circles_it_must_catch() -> None:
    """The checker itself: a circle through `use`, `super::`, a re-export and a child by name;
    a child's use of its parent's items, comments, strings and tests are no dependency."""
    modules = {
        (): "pub mod a; pub mod b; pub mod c; pub use c::Thing;",
        ("a",): 'use crate::b::{x, y::{self, Z}};\nfn f() { let s = "crate::c::f"; }',
        ("b",): "pub mod y; fn g() -> crate::Thing { y::h() }",
        ("b", "y"): "pub fn h() -> super::super::a::T { super::Local }",
        ("c",): "// use crate::a;\npub struct Thing;\n#[cfg(test)]\nmod tests { use crate::a; }",
    }
    graph = dependencies({m: without_tests(strip_code(code)) for m, code in modules.items()})
    assert graph[("a",)] == {("b",), ("b", "y")}
    assert graph[("b",)] == {("b", "y"), ("c",)}
    assert graph[("b", "y")] == {("a",)}
    assert graph[("c",)] == set()
    assert cycles(graph) == [[("a",), ("b",), ("b", "y")]]
