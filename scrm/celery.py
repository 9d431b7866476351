"""The Celery application. Tasks live in each app's ``tasks.py`` and stay thin."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings.local")

app = Celery("scrm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # Webhook deliveries whose retry message was lost (worker killed, Redis restarted) are sent again.
    "sweep-webhook-deliveries": {
        "task": "api.tasks.sweep_webhook_deliveries_task",
        "schedule": crontab(minute="*/5"),
    },
    "project-consent": {
        "task": "members.tasks.project_consent_task",
        "schedule": crontab(hour=2, minute=0),
    },
    # Nightly: every member's metrics; moves buyers to dormant/lost as time passes (dated lifecycle
    # transitions), then re-cuts the RFM quantile edges and re-scores the cells (members.rfm).
    "recompute-member-metrics": {
        "task": "members.tasks.recompute_member_metrics_task",
        "schedule": crontab(hour=2, minute=30),
    },
    # Nightly, after the metrics: anonymise members inactive past SCRM_RETENTION_INACTIVE_DAYS.
    "anonymise-inactive-members": {
        "task": "members.tasks.anonymise_inactive_members_task",
        "schedule": crontab(hour=3, minute=30),
    },
    # Every five minutes: import jobs whose worker died are re-queued or failed.
    "reconcile-import-jobs": {
        "task": "scrm.tasks.reconcile_import_jobs_task",
        "schedule": crontab(minute="*/5"),
    },
    # Nightly: import and export files older than SCRM_JOB_FILES_KEEP_DAYS are deleted.
    "delete-old-job-files": {
        "task": "scrm.tasks.delete_old_job_files_task",
        "schedule": crontab(hour=4, minute=15),
    },
    # Loyalty, just after midnight (points and coupons expire at the end of a local day or month):
    # coupons past their expiry, refunds recorded outside the order path, expired points; then tiers.
    "expire-coupons": {
        "task": "loyalty.tasks.expire_coupons_task",
        "schedule": crontab(hour=0, minute=5),
    },
    "reverse-refunded-points": {
        "task": "loyalty.tasks.reverse_refunded_points_task",
        "schedule": crontab(hour=0, minute=15),
    },
    "expire-points": {
        "task": "loyalty.tasks.expire_points_task",
        "schedule": crontab(hour=0, minute=30),
    },
    "evaluate-tiers": {
        "task": "loyalty.tasks.evaluate_tiers_task",
        "schedule": crontab(hour=1, minute=0),
    },
    # Campaigns: open the runs that are due (daily at a time, one-offs from their start), every minute.
    "campaign-schedules": {
        "task": "campaigns.tasks.run_campaign_schedules_task",
        "schedule": crontab(),
    },
    # Re-send dispatch work a lost message or a killed worker left undone (safe to repeat).
    "reconcile-dispatch": {
        "task": "campaigns.tasks.reconcile_dispatch_task",
        "schedule": crontab(minute="*/2"),
    },
    # Journeys: once a day, after the nightly metrics and tier evaluation; each step fires the event
    # dates of today and a few days back (catch-up), once per occurrence, so a missed day is harmless.
    "run-journeys": {
        "task": "campaigns.tasks.run_journeys_task",
        "schedule": crontab(hour=6, minute=0),
    },
    # Open tasks past their due time become expired.
    "expire-tasks": {
        "task": "campaigns.tasks.expire_tasks_task",
        "schedule": crontab(minute="*/15"),
    },
    # HQ dashboard facts: the recent weeks, the current month and recent campaigns every half hour;
    # every week and month the pages show (and last year's months) nightly, after the member metrics.
    "refresh-dashboard": {
        "task": "dashboard.tasks.refresh_dashboard_task",
        "schedule": crontab(minute="7,37"),
    },
    "refresh-dashboard-full": {
        "task": "dashboard.tasks.refresh_dashboard_task",
        "schedule": crontab(hour=4, minute=45),
        "kwargs": {"full": True},
    },
}
