from django.db import migrations

# Each audit row carries the hash of the row before it (the newest visible at insert time) and its own
# hash over its content. Rows inserted concurrently may share a predecessor (a fork); that is harmless.
# What verify_audit detects: a row whose content no longer matches its hash (altered), and a row whose
# predecessor is missing (removed). The hash function lives in SQL so the check uses the same formula.
SQL = """
CREATE OR REPLACE FUNCTION scrm_audit_row_hash(e scrm_auditevent) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws(chr(31),
        e.prev_hash, e.id::text,
        to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        coalesce(e.actor_id::text, ''), e.actor_kind, e.actor_label, e.action,
        e.target_type, e.target_id, e.target_label, coalesce(e.store_id::text, ''),
        e.changes::text, e.request_id, coalesce(host(e.ip), '')
    ), 'UTF8')), 'hex')
$$;

CREATE OR REPLACE FUNCTION scrm_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT hash INTO NEW.prev_hash FROM scrm_auditevent ORDER BY id DESC LIMIT 1;
    NEW.prev_hash := coalesce(NEW.prev_hash, '');
    NEW.hash := scrm_audit_row_hash(NEW);
    RETURN NEW;
END;
$$;

CREATE TRIGGER scrm_auditevent_chain
    BEFORE INSERT ON scrm_auditevent
    FOR EACH ROW EXECUTE FUNCTION scrm_audit_chain();
"""

REVERSE = """
DROP TRIGGER IF EXISTS scrm_auditevent_chain ON scrm_auditevent;
DROP FUNCTION IF EXISTS scrm_audit_chain();
DROP FUNCTION IF EXISTS scrm_audit_row_hash(scrm_auditevent);
"""


class Migration(migrations.Migration):
    dependencies = [("scrm", "0003_audit_hash_fields")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
