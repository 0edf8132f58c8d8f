"""The recipe reference: every key with its type, default and meaning, straight from the schema
(``--help-config`` and the generated table in docs/recipes.md, ``make docs``)."""
from __future__ import annotations

import dataclasses
import re
import typing

import yaml

from .schema import SECTIONS, type_name

__all__ = ["describe_config", "with_reference_table"]


def describe_config(markdown: bool = True) -> str:
    """Every key with its type, default and meaning, straight from the schema."""
    rows = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{section}.{f.name}", type_name(hints[f.name]),
                         yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("\n...")
                         .removesuffix("..."),
                         f.metadata["help"]))
    if markdown:
        lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {t.replace('|', chr(92) + '|')} | `{d}` | {h} |" for k, t, d, h in rows]
        return "\n".join(lines)
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {t}  (default: {d})\n{'':<{width}}  {h}" for k, t, d, h in rows)


REFERENCE_BLOCK = re.compile(r"(<!-- recipe-reference:start -->\n).*?(<!-- recipe-reference:end -->)", re.S)


def with_reference_table(markdown_text: str) -> str:
    """``markdown_text`` with the block between the recipe-reference markers regenerated, so the
    reference in docs/recipes.md is the schema's own listing (``make docs``)."""
    return REFERENCE_BLOCK.sub(lambda m: m.group(1) + describe_config(markdown=True) + "\n" + m.group(2),
                               markdown_text)
