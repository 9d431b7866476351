"""The nightly entry points run the services as the system and are scheduled by beat."""

from __future__ import annotations

import pytest

from loyalty import tasks
from loyalty.models import LoyaltyRun
from scrm.celery import app

pytestmark = pytest.mark.django_db


def test_each_nightly_task_records_a_run(tiers):
    assert tasks.expire_coupons_task() == 0
    assert tasks.reverse_refunded_points_task() == 0
    assert tasks.expire_points_task() == 0
    assert tasks.evaluate_tiers_task() == 0
    assert sorted(LoyaltyRun.objects.values_list("kind", flat=True)) == sorted(LoyaltyRun.Kind.values)


def test_beat_schedules_every_loyalty_task():
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert {
        "loyalty.tasks.expire_coupons_task",
        "loyalty.tasks.reverse_refunded_points_task",
        "loyalty.tasks.expire_points_task",
        "loyalty.tasks.evaluate_tiers_task",
    } <= scheduled
