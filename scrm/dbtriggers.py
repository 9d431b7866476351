"""SQL for the row-change triggers that catch writes made outside an audited service.

Used from migrations, e.g.
``migrations.RunSQL(*capture_changes("members_member", "members.member", "home_store_id"))``.
Statement-level triggers with transition tables: a bulk write costs one INSERT into the trail, not one
per row. Writes inside ``scrm.audit.app_audited`` (every service) are skipped: the service records them.
"""

from __future__ import annotations

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION scrm_capture_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    label text := TG_ARGV[0];
    store_col text := nullif(TG_ARGV[1], '');
    who text := coalesce(nullif(current_setting('scrm.actor', true), ''), session_user::text);
BEGIN
    IF current_setting('scrm.app_audited', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO scrm_auditevent (at, actor_kind, actor_label, action, target_type, target_id,
                                     target_label, store_id, changes, request_id, prev_hash, hash)
        SELECT now(), 'system', who, 'db.insert', label, j->>'id', '', (j->>store_col)::bigint, j, '', '', ''
          FROM (SELECT to_jsonb(n) AS j FROM scrm_new_rows n) s;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO scrm_auditevent (at, actor_kind, actor_label, action, target_type, target_id,
                                     target_label, store_id, changes, request_id, prev_hash, hash)
        SELECT now(), 'system', who, 'db.update', label, nj->>'id', '', (nj->>store_col)::bigint,
               (SELECT jsonb_object_agg(k, jsonb_build_array(oj->k, v))
                  FROM jsonb_each(nj) AS e(k, v) WHERE oj->k IS DISTINCT FROM v),
               '', '', ''
          FROM (SELECT to_jsonb(n) AS nj, to_jsonb(o) AS oj
                  FROM scrm_new_rows n JOIN scrm_old_rows o ON o.id = n.id) s
         WHERE nj IS DISTINCT FROM oj;
    ELSE
        INSERT INTO scrm_auditevent (at, actor_kind, actor_label, action, target_type, target_id,
                                     target_label, store_id, changes, request_id, prev_hash, hash)
        SELECT now(), 'system', who, 'db.delete', label, j->>'id', '', (j->>store_col)::bigint, j, '', '', ''
          FROM (SELECT to_jsonb(o) AS j FROM scrm_old_rows o) s;
    END IF;
    RETURN NULL;
END;
$$;
"""

FUNCTION_REVERSE_SQL = "DROP FUNCTION IF EXISTS scrm_capture_changes();"


def capture_changes(table: str, label: str, store_column: str = "") -> tuple[str, str]:
    """(forward, reverse) SQL attaching the row-change triggers to ``table``."""
    args = f"'{label}', '{store_column}'"
    forward = f"""
CREATE TRIGGER {table}_audit_insert AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS scrm_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scrm_capture_changes({args});
CREATE TRIGGER {table}_audit_update AFTER UPDATE ON {table}
    REFERENCING OLD TABLE AS scrm_old_rows NEW TABLE AS scrm_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scrm_capture_changes({args});
CREATE TRIGGER {table}_audit_delete AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS scrm_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scrm_capture_changes({args});
"""
    reverse = "\n".join(
        f"DROP TRIGGER IF EXISTS {table}_audit_{op} ON {table};" for op in ("insert", "update", "delete")
    )
    return forward, reverse
