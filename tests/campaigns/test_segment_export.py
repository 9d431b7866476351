"""A segment's members export to Excel through the background path, as the segment was when asked."""

import openpyxl
import pytest
from django.urls import reverse

from campaigns.models import Segment
from scrm.exports import run_export
from scrm.models import AuditEvent, ExportJob
from tests.factories import MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def _segment_of(store) -> Segment:
    return Segment.objects.create(
        name="静安店会员",
        definition={"op": "all", "items": [{"field": "home_store", "op": "in", "value": [store.pk]}]},
    )


def test_hq_exports_exactly_the_segments_members_as_defined_when_asked(client, hq_operator):
    store, other = StoreFactory(), StoreFactory()
    inside = MemberFactory.create_batch(3, home_store=store)
    MemberFactory.create_batch(2, home_store=other)
    segment = _segment_of(store)
    client.force_login(hq_operator)

    response = client.post(
        reverse("admin:campaigns_segment_changelist"),
        {"action": "export_members_xlsx", "_selected_action": [segment.pk]},
    )
    assert response.status_code == 302
    # an edit after the request does not change what the queued job exports
    Segment.objects.filter(pk=segment.pk).update(
        definition={"op": "all", "items": [{"field": "home_store", "op": "in", "value": [other.pk]}]}
    )
    job = run_export(ExportJob.objects.get(resource="campaigns.segment_members").pk)

    with job.file.open("rb") as handle:
        rows = list(openpyxl.load_workbook(handle).active.iter_rows(values_only=True))
    assert len(rows) == 1 + len(inside)
    names = {row[1] for row in rows[1:]}
    assert names == {m.name for m in inside}
    assert AuditEvent.objects.filter(
        action="export.requested", changes__resource="campaigns.segment_members"
    ).exists()


def test_a_user_without_export_rights_queues_nothing(client, auditor):
    segment = _segment_of(StoreFactory())
    client.force_login(auditor)

    client.post(
        reverse("admin:campaigns_segment_changelist"),
        {"action": "export_members_xlsx", "_selected_action": [segment.pk]},
    )

    assert not ExportJob.objects.exists()
