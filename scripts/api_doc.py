#!/usr/bin/env python3
"""api_doc.py — docs/api.md from include/umrt/umrt.h's doc comments (the same ones Doxygen reads:
`/** ... */` before a declaration, `/**< ... */` after it, `@page` blocks as sections).

    scripts/api_doc.py                 # writes docs/api.md
    scripts/api_doc.py --check         # exit 1 if docs/api.md is not what umrt.h says (ctest api_doc)

Plain Python 3. Every public function, type, field and enumerator gets its comment; one without
any is an error (so the header stays fully documented)."""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "include", "umrt", "umrt.h")
OUT = os.path.join(ROOT, "docs", "api.md")


def clean(text):
    """A comment's text without its markers and the stars and indentation of its lines."""
    text = re.sub(r"^/\*\*<?|\*/$", "", text.strip())
    lines = [re.sub(r"^\s*\*? ?", "", l).rstrip() for l in text.split("\n")]
    return " ".join(l.strip() for l in lines if l.strip())


def parse(src):
    """Items in file order: ('page', title, text), ('enum'|'struct', name, doc, members),
    ('func', signature, doc). Members are (declaration, doc)."""
    tokens = re.split(r"(/\*.*?\*/)", src, flags=re.S)
    items, pending = [], None
    block = None  # ('enum'|'struct', name, doc, members) being read
    last = None   # where a trailing /**< comment goes: a member list entry or an item
    for tok in tokens:
        if tok.startswith("/**<"):
            if last is not None:
                last[1] = (last[1] + " " + clean(tok)).strip()
            continue
        if tok.startswith("/**"):
            body = clean(tok)
            if "@page" in tok:
                raw = re.sub(r"^/\*\*|\*/$", "", tok.strip())
                first, _, rest = raw.partition("\n")
                title = re.sub(r"^\s*@page\s+\w+\s+", "", first).strip()
                items.append(("page", title, clean("/**" + rest + "*/")))
            elif "@file" in tok:
                items.append(("page", "Overview", clean(tok.replace("@file umrt.h", ""))))
            else:
                pending = body
            continue
        if tok.startswith("/*"):
            continue  # a plain comment: not part of the reference
        for line in tok.split("\n"):
            code = line.strip()
            if not code or code.startswith("#") or code in ('extern "C" {', "}"):
                continue
            m = re.match(r"typedef (enum|struct) (\w+) \{", code)
            if m:
                block = [m.group(1), m.group(2), pending or "", []]
                pending = None
                last = None
                continue
            if block is not None:
                if code.startswith("}"):
                    entry = ["__close__", ""]
                    last = entry  # "} umrt_status; /**< ..." adds to the type's doc
                    block.append(entry)
                    items.append(tuple(block))
                    block = None
                    continue
                entry = [code.rstrip(","), pending or ""]
                pending = None
                block[3].append(entry)
                last = entry
                continue
            m = re.match(r"(.+?\b(\w+)\(.*\);)", code)
            if m:
                entry = [m.group(1), pending or ""]
                pending = None
                items.append(("func", entry))
                last = entry
    return items


def render(items):
    out = ["# umrt API reference", "",
           "Generated from the comments of [include/umrt/umrt.h](../include/umrt/umrt.h) by "
           "`scripts/api_doc.py` (do not edit: edit the header, then run it; ctest `api_doc` checks "
           "they agree). The same comments make a Doxygen page: `doxygen docs/Doxyfile`. The "
           "[README](../README.md) is the overview; [design.md](design.md) says why.", ""]
    missing = []
    pages = [i for i in items if i[0] == "page"]
    types = [i for i in items if i[0] in ("enum", "struct")]
    funcs = [i for i in items if i[0] == "func"]
    for _, title, text in pages[:1]:
        out += ["## " + title, "", text, ""]
    out += ["## Types", ""]
    for kind, name, doc, members, *close in types:
        trailing = close[0][1] if close else ""
        out += [f"### `{name}` ({kind})", "", (doc + (" " + trailing if trailing else "")).strip() or "(no comment)", ""]
        if not doc and not trailing:
            missing.append(name)
        out += ["| " + ("enumerator" if kind == "enum" else "field") + " | meaning |", "| --- | --- |"]
        for decl, mdoc in members:
            if decl == "__close__":
                continue
            decl = decl.rstrip(";")
            if not mdoc:
                missing.append(f"{name}: {decl}")
            cell = mdoc.replace("|", "\\|")
            out.append(f"| `{decl}` | {cell} |")
        out.append("")
    out += ["## Functions", ""]
    for _, (sig, doc) in funcs:
        name = re.search(r"(\w+)\(", sig).group(1)
        if not doc:
            missing.append(name)
        out += [f"### `{name}`", "", "```c", sig, "```", "", doc or "(no comment)", ""]
    for _, title, text in pages[1:]:
        out += ["## " + title, "", text, ""]
    return "\n".join(out).rstrip() + "\n", missing


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with docs/api.md instead of writing it")
    a = ap.parse_args()
    with open(HEADER) as f:
        text, missing = render(parse(f.read()))
    if missing:
        print("api_doc.py: undocumented in umrt.h: " + ", ".join(missing), file=sys.stderr)
        return 1
    if a.check:
        with open(OUT) as f:
            if f.read() != text:
                print("api_doc.py: docs/api.md is out of date; run scripts/api_doc.py", file=sys.stderr)
                return 1
        return 0
    with open(OUT, "w") as f:
        f.write(text)
    print(f"api_doc.py: wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
