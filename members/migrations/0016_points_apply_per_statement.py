from django.db import migrations

# The balance follows the ledger per statement, not per row: a batch of 1,000 ledger rows (points
# earned by a batch of orders, an import, an expiry run) moves each member's balance with one UPDATE of
# the summed deltas instead of 1,000 single-row UPDATEs. The guard on members_member still sees the
# update at trigger depth 2, so nothing else may move the balance; the non-negative check still holds
# on the final balance of the statement.
FORWARD = """
DROP TRIGGER IF EXISTS members_points_apply ON members_pointsentry;
CREATE OR REPLACE FUNCTION members_points_apply_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE members_member m
       SET points_balance = m.points_balance + d.delta
      FROM (SELECT member_id, sum(delta) AS delta FROM members_points_new GROUP BY member_id) d
     WHERE m.id = d.member_id AND d.delta <> 0;
    RETURN NULL;
END;
$$;
CREATE TRIGGER members_points_apply
    AFTER INSERT ON members_pointsentry
    REFERENCING NEW TABLE AS members_points_new
    FOR EACH STATEMENT EXECUTE FUNCTION members_points_apply_statement();
"""

REVERSE = """
DROP TRIGGER IF EXISTS members_points_apply ON members_pointsentry;
DROP FUNCTION IF EXISTS members_points_apply_statement();
CREATE TRIGGER members_points_apply
    AFTER INSERT ON members_pointsentry
    FOR EACH ROW EXECUTE FUNCTION members_points_apply();
"""


class Migration(migrations.Migration):
    dependencies = [("members", "0015_segment_indexes")]
    operations = [migrations.RunSQL(FORWARD, REVERSE)]
