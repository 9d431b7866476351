from django.db import migrations

# The points balance is derived state. Whatever writes a ledger row (service, admin, import, raw SQL),
# the balance moves with it in the same statement, and nothing else may move it. Ledgers are append-only.
SQL = """
CREATE OR REPLACE FUNCTION members_points_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE members_member SET points_balance = points_balance + NEW.delta WHERE id = NEW.member_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER members_points_apply
    AFTER INSERT ON members_pointsentry
    FOR EACH ROW EXECUTE FUNCTION members_points_apply();

CREATE OR REPLACE FUNCTION members_points_balance_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- pg_trigger_depth() > 1: the update comes from members_points_apply, the only legitimate writer.
    IF NEW.points_balance IS DISTINCT FROM OLD.points_balance AND pg_trigger_depth() <= 1 THEN
        RAISE EXCEPTION 'points_balance changes only through the points ledger'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER members_points_balance_guard
    BEFORE UPDATE OF points_balance ON members_member
    FOR EACH ROW EXECUTE FUNCTION members_points_balance_guard();

CREATE OR REPLACE FUNCTION members_points_balance_insert_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.points_balance <> 0 THEN
        RAISE EXCEPTION 'a new member starts with 0 points; add a ledger entry instead'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER members_points_balance_insert_guard
    BEFORE INSERT ON members_member
    FOR EACH ROW EXECUTE FUNCTION members_points_balance_insert_guard();

CREATE TRIGGER members_pointsentry_append_only
    BEFORE UPDATE OR DELETE ON members_pointsentry
    FOR EACH ROW EXECUTE FUNCTION scrm_refuse_change();
CREATE TRIGGER members_consentrecord_append_only
    BEFORE UPDATE OR DELETE ON members_consentrecord
    FOR EACH ROW EXECUTE FUNCTION scrm_refuse_change();
"""

REVERSE = """
DROP TRIGGER IF EXISTS members_consentrecord_append_only ON members_consentrecord;
DROP TRIGGER IF EXISTS members_pointsentry_append_only ON members_pointsentry;
DROP TRIGGER IF EXISTS members_points_balance_insert_guard ON members_member;
DROP TRIGGER IF EXISTS members_points_balance_guard ON members_member;
DROP TRIGGER IF EXISTS members_points_apply ON members_pointsentry;
"""


class Migration(migrations.Migration):
    dependencies = [("members", "0001_initial"), ("scrm", "0002_audit_append_only")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
