"""Reads of cross-cutting records."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection


@dataclass(frozen=True)
class BrokenLink:
    event_id: int
    problem: str  # "altered" or "predecessor_missing"


def audit_chain_breaks(*, limit: int = 100) -> list[BrokenLink]:
    """Audit rows whose hash no longer matches their content, or whose predecessor is gone, by id."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT e.id, CASE WHEN e.hash <> scrm_audit_row_hash(e) THEN 'altered'
                              ELSE 'predecessor_missing' END
              FROM scrm_auditevent e
             WHERE e.hash <> scrm_audit_row_hash(e)
                OR (e.prev_hash <> '' AND NOT EXISTS (
                        SELECT 1 FROM scrm_auditevent p WHERE p.hash = e.prev_hash AND p.id < e.id))
             ORDER BY e.id
             LIMIT %s
            """,
            [limit],
        )
        return [BrokenLink(event_id, problem) for event_id, problem in cursor.fetchall()]
