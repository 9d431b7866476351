"""Thin Celery entry points for campaigns: ids in, a service does the work, every body safe to repeat.

JSON only (project settings), ``acks_late`` (a worker killed mid-task leaves the message to be
redelivered or the reconciler to resend it), explicit time limits, and retries only for the database
being briefly unreachable or a deadlock (``OperationalError``).
"""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import dispatch, journeys, services

TRANSIENT = (OperationalError, InterfaceError)
COMMON = {
    "acks_late": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 5,
}


@shared_task(time_limit=600, soft_time_limit=540, **COMMON)
def evaluate_run_task(run_id: int) -> None:
    dispatch.evaluate_run(run_id)


@shared_task(time_limit=300, soft_time_limit=270, **COMMON)
def dispatch_store_task(run_id: int, store_id: int) -> int:
    return dispatch.create_store_tasks(run_id, store_id)


@shared_task(time_limit=120, soft_time_limit=100, **COMMON)
def reconcile_dispatch_task() -> dict:
    return dispatch.reconcile_dispatch()


@shared_task(time_limit=600, soft_time_limit=540, **COMMON)
def expire_tasks_task() -> int:
    return dispatch.expire_tasks()


@shared_task(time_limit=120, soft_time_limit=100, **COMMON)
def run_campaign_schedules_task() -> int:
    return len(services.run_campaign_schedules())


# The journey clock: each fired step commits on its own, so a retry after a crash redoes only what is
# missing.
@shared_task(time_limit=1800, soft_time_limit=1700, **COMMON)
def run_journeys_task() -> int:
    return len(journeys.run_journeys().runs)
