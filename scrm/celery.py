"""The Celery application. Tasks live in each app's ``tasks.py`` and stay thin."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings.local")

app = Celery("scrm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "project-consent": {
        "task": "members.tasks.project_consent_task",
        "schedule": crontab(hour=2, minute=0),
    },
    # Nightly: refresh recency-dependent metrics (lifecycle stage, RFM recency) for every member.
    "recompute-member-metrics": {
        "task": "members.tasks.recompute_member_metrics_task",
        "schedule": crontab(hour=2, minute=30),
    },
    # Nightly, after the metrics: anonymise members inactive past SCRM_RETENTION_INACTIVE_DAYS.
    "anonymise-inactive-members": {
        "task": "members.tasks.anonymise_inactive_members_task",
        "schedule": crontab(hour=3, minute=30),
    },
}
