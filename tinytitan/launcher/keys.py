"""``tinytitan train --help``: every config key, generated from the dataclasses that define them.

torchtitan's ``JobConfig`` sections and tinytitan's (``tinytitan.job_config``) document each field
with a string right under it (the convention tyro reads too). This module reads those strings from
the classes' source with ``ast``, so the help is the code's own words and cannot drift from it: a
new key appears with its first sentence, a removed one disappears. tinytitan's keys merged into a
torchtitan section (``[model] attn_type``) are listed in that section, marked ``(tinytitan)``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing

from tinytitan.config import shipped_configs
from tinytitan.config_types import type_hints

MEANING_CHARS = 120  # a meaning longer than this is cut at its first sentence, then shortened


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """field name -> its documentation: the string literal under the field, else the comment on its line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's words win
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # made at run time (torchtitan's merged sections): no source
            continue
        tree = ast.parse(source)
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                    if tok.type == tokenize.COMMENT}  # fmt: skip
        for node, after in zip(body, [*body[1:], None], strict=True):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            text = None
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                text = after.value.value if isinstance(after.value.value, str) else None
            text = text or comments.get(node.end_lineno or node.lineno)
            if text:
                docs[node.target.id] = text
    return docs


def one_line(text: str) -> str:
    """The first paragraph on one line; when long, its first sentence; still long, shortened with '…'."""
    words = " ".join(text.strip().split("\n\n")[0].split())
    if len(words) > MEANING_CHARS:
        words = re.split(r"(?<=\.)\s+(?=[A-Z'`(])", words, maxsplit=1)[0]
    if len(words) > MEANING_CHARS:
        words = words[: MEANING_CHARS - 1].rstrip() + "…"
    return words


def type_word(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return "|".join(type_word(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if tp is bool:
        return "(switch)"
    if origin in (list, tuple, set) or tp in (list, tuple, set):
        return "LIST"
    if origin is dict or tp is dict:
        return "TABLE"
    return {int: "INT", float: "FLOAT", str: "STR"}.get(tp, getattr(tp, "__name__", "VALUE").upper())


def _item_class(tp):
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


@dataclasses.dataclass
class Key:
    name: str  # dotted: training.steps
    type: str
    meaning: str
    ours: bool  # tinytitan's key (in a torchtitan section)


def _keys(cls, prefix: str, ours: bool, tables: list[tuple[str, type]]) -> list[Key]:
    hints, docs, out = type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, f.type)
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, f"{prefix}{f.name}.", ours, tables)
            continue
        item = _item_class(tp)
        if item is not None:
            tables.append((f"{prefix}{f.name}", item))
        out.append(Key(f"{prefix}{f.name}", "TABLES" if item else type_word(tp), one_line(docs.get(f.name, "")), ours))
    return out


def sections() -> list[tuple[str, str, list[Key], list[tuple[str, type]]]]:
    """(section, whose, keys, arrays of tables) in torchtitan's order, then tinytitan's own sections."""
    from torchtitan.config import JobConfig as TitanJobConfig

    from tinytitan.job_config import JobConfig as TinyJobConfig

    titan = {f.name: f for f in dataclasses.fields(TitanJobConfig)}
    tiny = {f.name: f for f in dataclasses.fields(TinyJobConfig)}
    titan_hints, tiny_hints = type_hints(TitanJobConfig), type_hints(TinyJobConfig)
    out = []
    for name in [*titan, *(n for n in tiny if n not in titan)]:
        keys: list[Key] = []
        tables: list[tuple[str, type]] = []
        if name in titan:
            keys += _keys(titan_hints[name], f"{name}.", False, tables)
        if name in tiny:
            known = {k.name for k in keys}
            keys += [k for k in _keys(tiny_hints[name], f"{name}.", name in titan, tables) if k.name not in known]
        whose = "tinytitan" if name not in titan else "torchtitan" + (" + tinytitan" if name in tiny else "")
        out.append((name, whose, keys, tables))
    return out


def _line(flag: str, kind: str, meaning: str) -> str:
    head = f"  {flag} {kind}"
    return f"{head:<46} {meaning}" if len(head) < 46 else f"{head}\n{'':<46} {meaning}"


def keys_help() -> str:
    """The text ``tinytitan train --help`` appends: the shipped configs, then every section and key."""
    lines = [
        "shipped configs (--config NAME): " + ", ".join(shipped_configs()),
        "",
        "config keys: [section] key = value in the TOML, or --section.key VALUE on the command line",
        "(a switch: --section.key / --section.no-key; an array of tables: --section.table.N.key VALUE)",
    ]
    for name, whose, keys, tables in sections():
        lines += ["", f"[{name}]  ({whose})"]
        for key in keys:
            flag = f"--{key.name}" + ("" if key.type != "(switch)" else f" / --{key.name.rpartition('.')[0]}.no-"
                                      f"{key.name.rpartition('.')[2]}")  # fmt: skip
            kind = "" if key.type == "(switch)" else key.type
            lines.append(_line(flag, kind, ("(tinytitan) " if key.ours else "") + key.meaning))
        for table, item in tables:
            lines += ["", f"[[{table}]]  (one table each; override: --{table}.N.KEY VALUE, N from 0)"]
            docs = field_docs(item)
            for f in dataclasses.fields(item):
                lines.append(
                    _line(f.name, type_word(type_hints(item).get(f.name, f.type)), one_line(docs.get(f.name, "")))
                )
    return "\n".join(lines)
