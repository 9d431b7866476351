import datetime

import pytest
from django.utils import timezone

from members.metrics import refresh_member_metrics
from members.models import Member
from members.tasks import recompute_member_metrics_task
from scrm.models import AuditEvent
from tests.factories import MemberFactory, OrderFactory
from tests.worker import celery_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def test_the_nightly_task_runs_on_a_real_worker_through_redis():
    member = MemberFactory()
    OrderFactory(member=member, paid_at=timezone.now() - datetime.timedelta(days=120))
    refresh_member_metrics([member.pk], now=timezone.now() - datetime.timedelta(days=100))
    assert Member.objects.get(pk=member.pk).lifecycle_stage == "first_purchase"

    with celery_worker():
        recompute_member_metrics_task.delay()
        assert wait_for(lambda: AuditEvent.objects.filter(action="member.metrics_recomputed").exists())

    event = AuditEvent.objects.get(action="member.metrics_recomputed")
    assert (event.actor_kind, event.actor_label, event.changes["changed"]) == ("system", "nightly", 1)
    assert Member.objects.get(pk=member.pk).lifecycle_stage == "dormant"
