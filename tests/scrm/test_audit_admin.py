"""The audit officer's view of the trail: filters by actor, action, member, store and time, and export."""

import csv
import datetime
import hashlib
import io

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from scrm import security
from scrm.admin import parse_time_bound
from scrm.admin_base import EstimatedCountPaginator
from scrm.audit import Actor, record
from scrm.models import AuditEvent
from tests.factories import MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:scrm_auditevent_changelist")
EXPORT = reverse("admin:scrm_auditevent_export")
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))


@pytest.fixture
def trail(hq_operator, guide):
    """Two members in two stores, each updated by HQ; a guide's sign-in; a store renamed by the system."""
    store_a, store_b = guide.store, StoreFactory(code="STB")
    member_a = MemberFactory(home_store=store_a)
    member_b = MemberFactory(home_store=store_b)
    hq = Actor.for_user(hq_operator)
    return {
        "store_a": store_a,
        "member_a": member_a,
        "updated_a": record(hq, "member.updated", target=member_a, changes={"name": ["a", "b"]}),
        "updated_b": record(hq, "member.updated", target=member_b, changes={"name": ["c", "d"]}),
        "login": record(Actor.for_user(guide.user), "auth.login", target=guide.user),
        "renamed": record(
            Actor.system("tests"), "store.updated", target=store_b, changes={"name": ["x", "y"]}
        ),
    }


def listed(client, **filters):
    response = client.get(CHANGELIST, filters)
    assert response.status_code == 200
    return {event.pk for event in response.context["cl"].result_list}


# --------------------------------------------------------------------------------------------------
# Filters


def test_filter_by_the_actors_username(client, auditor, trail, hq_operator):
    client.force_login(auditor)

    assert listed(client, actor=hq_operator.username) == {trail["updated_a"].pk, trail["updated_b"].pk}
    assert listed(client, actor="nobody") == set()


def test_filter_by_action_prefix(client, auditor, trail):
    client.force_login(auditor)

    assert listed(client, action="member.") == {trail["updated_a"].pk, trail["updated_b"].pk}
    assert listed(client, action="store.") == {trail["renamed"].pk}


def test_filter_by_member_id(client, auditor, trail):
    member = trail["member_a"]
    created = AuditEvent.objects.get(
        action="db.insert", target_type="members.member", target_id=str(member.pk)
    )
    client.force_login(auditor)

    # The member's creation (caught by the row trigger) and HQ's update: everything about that member.
    assert listed(client, member=str(member.pk)) == {created.pk, trail["updated_a"].pk}
    assert listed(client, member="not-a-number") == set()


def test_filter_by_store_code(client, auditor, trail):
    store = trail["store_a"]
    client.force_login(auditor)

    found = listed(client, store=store.code.lower())  # codes are matched as typed, in any case

    assert trail["updated_a"].pk in found
    assert trail["updated_b"].pk not in found
    assert found == set(AuditEvent.objects.filter(store_id=store.pk).values_list("pk", flat=True))
    assert listed(client, store="NO-SUCH-STORE") == set()


def test_filter_by_time_range(client, auditor, trail):
    client.force_login(auditor)
    today = timezone.localdate()
    everything = set(AuditEvent.objects.values_list("pk", flat=True))
    soon = (timezone.localtime() + datetime.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")

    assert listed(client, at_from=today.isoformat(), at_to=today.isoformat()) == everything
    assert listed(client, at_from=(today + datetime.timedelta(days=1)).isoformat()) == set()
    assert listed(client, at_to=(today - datetime.timedelta(days=1)).isoformat()) == set()
    assert listed(client, at_from=soon) == set()
    assert listed(client, at_to=soon) == everything


def test_a_time_that_cannot_be_read_says_so(client, auditor, trail):
    client.force_login(auditor)

    response = client.get(CHANGELIST, {"at_from": "31/01/2025"})

    assert list(response.context["cl"].result_list) == []
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert "31/01/2025" in message


@pytest.mark.parametrize(
    ("value", "end", "expected"),
    [
        ("2025-01-31", "from", datetime.datetime(2025, 1, 31, 0, 0, tzinfo=SHANGHAI)),
        ("2025-01-31", "to", datetime.datetime(2025, 2, 1, 0, 0, tzinfo=SHANGHAI)),  # the whole 31st
        ("2025-01-31 14:30", "from", datetime.datetime(2025, 1, 31, 14, 30, tzinfo=SHANGHAI)),
        ("2025-01-31 14:30", "to", datetime.datetime(2025, 1, 31, 14, 30, 0, 1, tzinfo=SHANGHAI)),
        ("2025-02-30", "from", None),
        ("yesterday", "to", None),
    ],
)
def test_time_bounds_are_read_in_shanghai_time(value, end, expected):
    assert parse_time_bound(value, end=end) == expected


def test_filters_combine(client, auditor, trail, hq_operator):
    client.force_login(auditor)

    found = listed(client, actor=hq_operator.username, store=trail["store_a"].code, action="member.")

    assert found == {trail["updated_a"].pk}


def test_the_list_keeps_the_estimated_count(client, auditor, trail):
    client.force_login(auditor)

    response = client.get(CHANGELIST)

    assert isinstance(response.context["cl"].paginator, EstimatedCountPaginator)


# --------------------------------------------------------------------------------------------------
# Export


def export(client, file_format="xlsx", **filters):
    query = "?" + "&".join(f"{k}={v}" for k, v in filters.items()) if filters else ""
    return client.post(EXPORT + query, {"format": file_format})


def body_of(response):
    return b"".join(response.streaming_content)


def test_the_auditor_exports_the_filtered_trail_as_xlsx_and_it_is_audited(client, auditor, trail):
    client.force_login(auditor)

    response = export(client, action="member.")

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="audit-trail-')
    body = body_of(response)
    rows = list(load_workbook(io.BytesIO(body), read_only=True).active.iter_rows(values_only=True))
    assert rows[0] == tuple(security.audit_export_headers())
    assert (rows[0][1], rows[0][2]) == ("时间", "操作")  # the fields' names, Chinese by default
    assert [(row[0], row[2], row[5], row[6]) for row in rows[1:]] == [
        (e.pk, "member.updated", "members.member", e.target_id)
        for e in (trail["updated_a"], trail["updated_b"])
    ]
    exported = AuditEvent.objects.get(action="audit.exported")
    assert exported.actor == auditor
    assert exported.changes == {
        "format": "xlsx",
        "rows": 2,
        "sha256": hashlib.sha256(body).hexdigest(),
        "truncated": False,
        "filters": {"action": ["member."]},
    }


def test_the_csv_export_neutralises_formulas(client, hq_admin):
    store = StoreFactory(name='=HYPERLINK("http://x")', code="EVIL")
    record(Actor.system("tests"), "store.updated", target=store, changes={"name": ["a", "=1+1"]})
    client.force_login(hq_admin)

    response = export(client, "csv", action="store.updated")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body_of(response).decode("utf-8-sig"))))
    [row] = rows[1:]
    assert row[7] == '\'=HYPERLINK("http://x")（EVIL）'
    assert row[9] == '{"name": ["a", "=1+1"]}'  # JSON starts with a brace: left as it is


def test_the_export_says_when_it_was_cut_short(client, auditor, trail, monkeypatch):
    monkeypatch.setattr(security, "AUDIT_EXPORT_MAX_ROWS", 1)
    client.force_login(auditor)

    response = export(client, action="member.")

    rows = list(
        load_workbook(io.BytesIO(body_of(response)), read_only=True).active.iter_rows(values_only=True)
    )
    assert [row[0] for row in rows[1:]] == [trail["updated_a"].pk]
    assert AuditEvent.objects.get(action="audit.exported").changes["truncated"] is True
    assert len(list(get_messages(response.wsgi_request))) == 1


def test_hq_operators_read_the_trail_but_do_not_export_it(client, hq_operator, trail):
    client.force_login(hq_operator)

    assert client.get(CHANGELIST).status_code == 200
    assert EXPORT not in client.get(CHANGELIST).content.decode()
    assert export(client).status_code == 403
    assert not AuditEvent.objects.filter(action="audit.exported").exists()
    assert AuditEvent.objects.get(action="access.denied").changes["path"] == EXPORT


def test_the_export_buttons_are_shown_to_who_may_export(client, auditor, hq_admin):
    for user in (auditor, hq_admin):
        client.force_login(user)
        page = client.get(CHANGELIST).content.decode()
        assert f'action="{EXPORT}' in page
        assert 'value="xlsx"' in page
        assert 'value="csv"' in page


def test_the_export_carries_the_lists_filters(client, auditor, trail, hq_operator):
    client.force_login(auditor)

    page = client.get(CHANGELIST, {"actor": hq_operator.username}).content.decode()

    assert f'action="{EXPORT}?actor={hq_operator.username}"' in page


def test_the_export_is_a_post_with_a_known_format(client, auditor):
    client.force_login(auditor)

    assert client.get(EXPORT).status_code == 405
    assert client.post(EXPORT, {"format": "pdf"}).status_code == 400
    assert not AuditEvent.objects.filter(action="audit.exported").exists()
