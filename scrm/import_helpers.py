"""Pieces the importers (see scrm.imports) share: blank rows, alias choices, code lookups, counts.

The pipeline itself does not use them; each importer module picks what its rows need.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from scrm.imports import Importer, clean_code, is_empty


def alias_choices(aliases: Mapping[Any, tuple[str, ...]]) -> dict[str, str]:
    """Every alias, the code and the translated label (lower-cased, full-width folded) → the code."""
    choices: dict[str, str] = {}
    for value, names in aliases.items():
        for name in (*names, value.value, str(value.label)):
            choices[unicodedata.normalize("NFKC", name).strip().lower()] = value.value
    return choices


def alias_options(aliases: Mapping[Any, tuple[str, ...]]) -> list[str]:
    """The first alias of each choice: what templates and error messages offer."""
    return [names[0] for names in aliases.values()]


def alias_expected(aliases: Mapping[Any, tuple[str, ...]]) -> str:
    """The options as an error message lists them."""
    return " / ".join(alias_options(aliases))


def padded_row(importer: Importer, cells: list[Any]) -> list[Any] | None:
    """The row padded to the bound columns, or None for a blank row (skipped, not an error)."""
    cells = importer.padded(cells)
    if all(is_empty(v) for v in cells):
        return None
    return cells


def optional(cleaner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``cleaner`` for a cell that may be empty (None then), for cleaners that refuse empty values."""

    def clean(value: Any) -> Any:
        return None if is_empty(value) else cleaner(value)

    return clean


def clean_lookup(
    importer: Importer,
    cells: list[Any],
    key: str,
    problems: list[tuple[str, str]],
    known: Mapping[str, int],
    unknown: Callable[[str], str],
    *,
    missing: Any = None,
) -> int | None:
    """The id of the code in column ``key`` (``clean_code``, then ``known``); ``unknown(code)`` if absent."""
    code = importer.clean_cell(cells, key, clean_code, problems, missing=missing)
    if code is None:
        return None
    pk = known.get(code)
    if pk is None:
        problems.append((key, unknown(code)))
    return pk


def target_counts(
    cursor: Any, *, new: str = "false", updated: str = "false", unchanged: str, rows: str | None = None
) -> dict[str, int]:
    """``{"new", "updated", "unchanged"}`` of ``import_target``, each a SQL condition on its rows.

    ``rows``: a column holding how many file rows each target row stands for (counted once otherwise).
    The conditions are fixed SQL written by the importer, never anything from the file.
    """
    measure = "count(*)" if rows is None else f"sum({rows})"
    counts = ", ".join(
        f"COALESCE({measure} FILTER (WHERE {condition}), 0)" for condition in (new, updated, unchanged)
    )
    cursor.execute(f"SELECT {counts} FROM import_target")
    new_rows, updated_rows, unchanged_rows = cursor.fetchone()
    return {"new": int(new_rows), "updated": int(updated_rows), "unchanged": int(unchanged_rows)}
