"""Thin Celery entry points for members; the work is in services."""

from celery import shared_task
from django.db import OperationalError

from scrm.audit import Actor

from .services import recompute_all_member_metrics


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def recompute_member_metrics_task() -> int:
    return recompute_all_member_metrics(actor=Actor.system("nightly"))
