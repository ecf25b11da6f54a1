#!/usr/bin/env python3
"""Fails (exit 1) when the crate's modules import each other in a cycle (issue 16), when an
engine module imports the edge (`actions`, `commands`; see EDGE), or when `error` imports any
module of the crate.

Reads every src/**/*.rs, collects each module's references to other modules of the crate
(`use crate::a::b`, `use crate::{a, b::c}`, `super::x`, and paths used inline such as
`crate::actions::commands::log(...)`), leaving out comments, string literals and the unit
tests at the end of a file (`#[cfg(test)] mod tests`). Then, for the crate root and for every
module with submodules, it groups each file under the child it belongs to and looks for
cycles among those children (strongly connected components): `archive::sql` using
`archive::verify` while `archive::verify` uses `archive::sql` is a cycle inside `archive`;
`docker` using `actions` while `actions` uses `docker` is one at the top.

ALLOWED lists the known edges that are tolerated for now, each with the reason; an edge
that is not needed any more is reported, so that the list only shrinks.
Usage: scripts/module-cycles.py [SRC_DIR]   (default: src)
"""
import os
import re
import sys

# (from, to) edges between siblings that may close a cycle, with why. Keep it short.
ALLOWED = {}

# One direction (issue 16): the edge (`commands`, `actions`: the GitHub runtime and the
# Reporter that talks to it) calls the engine; the engine reports through the
# `report::Reporter` it is given and never imports the edge. `error` imports no module.
EDGE = {"actions", "commands"}
LEAF = {"error"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
CHAR = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'\n])'")


def strip(text):
    """Removes comments, string and char literals (keeps line structure)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            seg = text[i:n if end < 0 else end + 1 + len(m.group(1))]
            out.append('""' + "\n" * seg.count("\n"))
            i += len(seg)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text[i:j].count("\n"))
            i = j + 1
        elif c == "'" and CHAR.match(text, i):
            i = CHAR.match(text, i).end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_tests(text):
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", text)
    return text[: m.start()] if m else text


def split_top(group):
    """Splits `a, b::{c, d}, e` at the commas of depth 0."""
    items, depth, cur = [], 0, ""
    for ch in group:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip()]


def expand(path):
    """`a::{b, c::d}` -> [[a, b], [a, c, d]]; `a::b as x` -> [[a, b]]; `a::*` -> [[a]]."""
    path = re.sub(r"\s+as\s+" + IDENT + r"\s*$", "", path.strip())
    m = re.match(r"^((?:" + IDENT + r"\s*::\s*)*)\{(.*)\}$", path, re.S)
    if m:
        prefix = [s for s in re.split(r"\s*::\s*", m.group(1)) if s]
        res = []
        for item in split_top(m.group(2)):
            if item == "self":
                res.append(prefix)
            else:
                res += [prefix + p for p in expand(item)]
        return res
    segs = [s for s in re.split(r"\s*::\s*", path) if s and s != "*"]
    return [segs]


def module_of(path, src):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return []
    return rel


def references(text, here, modules):
    """Module paths (tuples) that `text`, the source of module `here`, refers to."""
    refs = set()
    paths = []
    # use-trees: `use crate::{...};`, `use super::x::{...};`
    for m in re.finditer(r"\buse\s+((?:crate|super|self)\s*::[^;]*);", text, re.S):
        paths += expand(m.group(1))
    # inline paths: crate::a::b::f(...), super::x::y
    for m in re.finditer(r"\b((?:crate|super)(?:\s*::\s*(?:super|" + IDENT + r"))+)", text):
        paths.append([s for s in re.split(r"\s*::\s*", m.group(1)) if s])
    for segs in paths:
        base = list(here)
        if segs[0] == "crate":
            base, segs = [], segs[1:]
        elif segs[0] in ("super", "self"):
            # `super` of a file module is its parent; `self` is the module itself.
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
        full = base + segs
        # The longest prefix that is a module of the crate.
        for k in range(len(full), 0, -1):
            if tuple(full[:k]) in modules:
                refs.add(tuple(full[:k]))
                break
    refs.discard(tuple(here))
    return refs


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                p = os.path.join(root, name)
                mod = module_of(p, src)
                if mod:
                    files[tuple(mod)] = p
    modules = set(files)
    for m in list(modules):
        for k in range(1, len(m)):
            modules.add(m[:k])
    refs = {}
    for mod, p in files.items():
        with open(p, encoding="utf-8") as f:
            refs[mod] = references(without_tests(strip(f.read())), list(mod), modules)

    used_allowances = set()
    problems = []
    for mod, targets in sorted(refs.items()):
        name = "::".join(mod)
        if mod[0] in LEAF and targets:
            problems.append(f"{name} imports {', '.join(sorted('::'.join(t) for t in targets))}: it must import no module of the crate")
        if mod[0] not in EDGE:
            for t in sorted(targets):
                if t[0] in EDGE:
                    problems.append(f"engine module {name} imports {'::'.join(t)}: report through the `&dyn Reporter` it is given, return values to the caller")
    parents = {m[:-1] for m in modules}
    for parent in sorted(parents):
        depth = len(parent)
        children = {m[depth] for m in modules if len(m) > depth and m[:depth] == parent}
        edges = {}
        for mod, targets in refs.items():
            if len(mod) <= depth or mod[:depth] != parent:
                continue
            a = mod[depth]
            for t in targets:
                if len(t) <= depth or t[:depth] != parent or t[depth] == a:
                    continue
                b = t[depth]
                key = ("::".join(parent + (a,)), "::".join(parent + (b,)))
                allowed = [k for k in ALLOWED if k[0] == key[0] and k[1] in ("*", key[1])]
                if allowed:
                    used_allowances.update(allowed)
                    continue
                edges.setdefault(a, set()).add(b)
        for comp in sccs(children, edges):
            if len(comp) > 1:
                where = "::".join(parent) or "crate"
                detail = "; ".join(
                    f"{a} -> {', '.join(sorted(b for b in edges.get(a, ()) if b in comp))}"
                    for a in comp
                )
                problems.append(f"import cycle in {where}: {' <-> '.join(comp)} ({detail})")
    for k in sorted(set(ALLOWED) - used_allowances):
        problems.append(f"allowed edge {k[0]} -> {k[1]} is not used any more: remove it from ALLOWED")
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"module cycles: none among {len(files)} module files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
