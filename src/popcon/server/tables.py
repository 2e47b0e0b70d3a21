"""Plain-text output of the CLI: aligned tables for people, CSV and JSON for scripts.

What a terminal shows passes through :func:`display_text`, which writes the characters that could
make it lie (controls, bidirectional overrides) as ``\\uXXXX`` escapes; what a CSV holds
passes through :func:`csv_cell`, which keeps a spreadsheet from reading a text cell as a
formula. JSON is the API's answer unchanged.

A count of people is ``None`` where no recorder sent any (statsd clients, ``popcon/1``
recorders, processes without a secret): a table writes it :data:`UNKNOWN_IN_TABLE`, a CSV
:data:`UNKNOWN_IN_CSV`, never 0.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: A column: (heading, key in the row). Numbers are right-aligned, text left-aligned.
Column = tuple[str, str]

#: Characters that can change what a line of text appears to say: C0 controls, DEL, C1
#: controls (U+0080-U+009F), and the bidirectional marks, embeddings, overrides and isolates.
_SPOOFING = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

#: The columns whose ``None`` is a count nobody knows (no person was reported), and how a table
#: and a CSV write it.
PEOPLE_KEYS = frozenset({"users", "direct_users", "program_users"})
UNKNOWN_IN_TABLE = "?"
UNKNOWN_IN_CSV = "unknown"


def display_text(text: str) -> str:
    """``text`` as a terminal may show it: each control or bidirectional formatting character
    written as its escape, ``\\u202e``, so stored data cannot reorder or hide what is printed."""
    return _SPOOFING.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell: text that begins with a formula character gets a leading ``'``
    (a spreadsheet then shows it as text); numbers stay numbers, whatever their sign; lists
    and dicts are their JSON."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def cell(value: Any, key: str = "") -> str:
    if value is None:
        return UNKNOWN_IN_TABLE if key in PEOPLE_KEYS else "-"
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
    """An aligned table with a heading line; a numeric column (and a column of people, whose
    unknown counts are ``?``) is right-aligned."""
    texts = [[display_text(cell(row.get(key), key)) for _, key in columns] for row in rows]
    widths = [len(heading) for heading, _ in columns]
    for line in texts:
        widths = [max(w, len(t)) for w, t in zip(widths, line)]

    right = [
        key in PEOPLE_KEYS
        or (
            any(_is_numeric(row.get(key)) for row in rows)
            and all(_is_numeric(row.get(key)) or isinstance(row.get(key), str) for row in rows)
        )
        for _, key in columns
    ]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return "  ".join(parts).rstrip()

    lines = [fmt([heading for heading, _ in columns])]
    lines.extend(fmt(line) for line in texts)
    return "\n".join(lines) + "\n"


def render_csv(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV with the row keys as the header, each cell a :func:`csv_cell`; hidden counts stay
    as their text, unknown counts of people are :data:`UNKNOWN_IN_CSV`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([key for _, key in columns])
    for row in rows:
        writer.writerow(
            [
                UNKNOWN_IN_CSV
                if row.get(key) is None and key in PEOPLE_KEYS
                else csv_cell(row.get(key))
                for _, key in columns
            ]
        )
    return out.getvalue()


def render_json(answer: Any) -> str:
    return json.dumps(answer, indent=2, sort_keys=False) + "\n"
