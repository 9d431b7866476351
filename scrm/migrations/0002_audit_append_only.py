from django.db import migrations

# The audit trail is append-only whatever the write path: the database itself refuses UPDATE and DELETE.
SQL = """
CREATE OR REPLACE FUNCTION scrm_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER scrm_auditevent_append_only
    BEFORE UPDATE OR DELETE ON scrm_auditevent
    FOR EACH ROW EXECUTE FUNCTION scrm_refuse_change();
CREATE TRIGGER scrm_auditevent_no_truncate
    BEFORE TRUNCATE ON scrm_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION scrm_refuse_change();
"""

REVERSE = """
DROP TRIGGER IF EXISTS scrm_auditevent_no_truncate ON scrm_auditevent;
DROP TRIGGER IF EXISTS scrm_auditevent_append_only ON scrm_auditevent;
"""


class Migration(migrations.Migration):
    dependencies = [("scrm", "0001_initial")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
