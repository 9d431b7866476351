"""Thin Celery entry points for members; the work is in services."""

from celery import shared_task
from django.db import OperationalError

from scrm.audit import Actor

from .consent import project_consent
from .privacy import anonymise_inactive_members
from .services import recompute_all_member_metrics


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def recompute_member_metrics_task() -> int:
    return recompute_all_member_metrics(actor=Actor.system("nightly"))


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def anonymise_inactive_members_task() -> int:
    """Nightly retention; safe to repeat, since erased members no longer match."""
    return anonymise_inactive_members(actor=Actor.system("retention"))


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def project_consent_task() -> int:
    """Nightly: consent flags follow the ledger as members turn 14 or birthdays are corrected."""
    return project_consent(actor=Actor.system("nightly"))
