"""The privacy-notice versions members have agreed to so far, and notices made immutable.

A grant counts only for the purposes of the notice version it was made under, so a published version
must never change afterwards: the database refuses UPDATE and DELETE on notice rows, as on the ledgers.
"""

import datetime
import zoneinfo

from django.db import migrations

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")

NOTICES = [
    (
        "2021-11",
        ["marketing", "service"],
        datetime.datetime(2021, 11, 1, tzinfo=SHANGHAI),
        "《个人信息保护法》施行后的隐私政策：会员服务通知；经同意后按渠道（短信、电话、企业微信、邮件）发送营销信息。",
    ),
    (
        "2024-01",
        ["marketing", "personalisation", "service"],
        datetime.datetime(2024, 1, 1, tzinfo=SHANGHAI),
        "新增个性化推荐：经同意后根据购买记录与偏好推荐商品和活动；营销信息与服务通知照旧按渠道征得同意。",
    ),
]

IMMUTABLE = """
CREATE TRIGGER members_privacynotice_immutable
    BEFORE UPDATE OR DELETE ON members_privacynotice
    FOR EACH ROW EXECUTE FUNCTION scrm_refuse_change();
"""
MUTABLE = "DROP TRIGGER IF EXISTS members_privacynotice_immutable ON members_privacynotice;"


def create_notices(apps, schema_editor):
    # Reference data shipped with the code: the migration history is its record. The row triggers stand
    # aside (the flag is transaction-local, as in scrm.audit.app_audited), so a new database starts with
    # an empty audit trail.
    schema_editor.execute("SELECT set_config('scrm.app_audited', 'on', true)")
    PrivacyNotice = apps.get_model("members", "PrivacyNotice")
    for version, purposes, published_at, summary in NOTICES:
        PrivacyNotice.objects.get_or_create(
            version=version, defaults={"purposes": purposes, "published_at": published_at, "summary": summary}
        )
    schema_editor.execute("SELECT set_config('scrm.app_audited', 'off', true)")


def remove_notices(apps, schema_editor):
    PrivacyNotice = apps.get_model("members", "PrivacyNotice")
    PrivacyNotice.objects.filter(version__in=[n[0] for n in NOTICES]).delete()


class Migration(migrations.Migration):
    dependencies = [("members", "0007_capture_changes_privacy")]
    operations = [
        migrations.RunPython(create_notices, remove_notices),
        migrations.RunSQL(IMMUTABLE, MUTABLE),
    ]
