"""Plain-text output of the CLI: aligned tables for people, CSV and JSON for scripts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

#: A column: (heading, key in the row). Numbers are right-aligned, text left-aligned.
Column = tuple[str, str]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0%}" if 0 <= value <= 1 else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def render_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """An aligned table with a heading line; a numeric column is right-aligned."""
    texts = [[cell(row.get(key)) for _, key in columns] for row in rows]
    widths = [len(heading) for heading, _ in columns]
    for line in texts:
        widths = [max(w, len(t)) for w, t in zip(widths, line)]
    right = [
        any(_is_numeric(row.get(key)) for row in rows)
        and all(_is_numeric(row.get(key)) or isinstance(row.get(key), str) for row in rows)
        for _, key in columns
    ]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return "  ".join(parts).rstrip()

    lines = [fmt([heading for heading, _ in columns])]
    lines.extend(fmt(line) for line in texts)
    return "\n".join(lines) + "\n"


def render_csv(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV with the row keys as the header; hidden counts stay as their text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([key for _, key in columns])
    for row in rows:
        writer.writerow(
            [
                json.dumps(row.get(key)) if isinstance(row.get(key), (dict, list)) else row.get(key)
                for _, key in columns
            ]
        )
    return out.getvalue()


def render_json(answer: Any) -> str:
    return json.dumps(answer, indent=2, sort_keys=False) + "\n"
