"""Thin Celery entry points for loyalty; the work is in services. Each is safe to run twice."""

from celery import shared_task
from django.db import OperationalError

from scrm.audit import Actor

from . import services


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def expire_points_task() -> int:
    """Nightly: points past their expiry leave the balance (an ``expire`` ledger row per member)."""
    return services.expire_points(actor=Actor.system("nightly")).points


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def reverse_refunded_points_task() -> int:
    """Nightly: refunds recorded by any path (admin, import, SQL) take back their share of points."""
    return services.reverse_refunded_points(actor=Actor.system("nightly")).count


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def evaluate_tiers_task() -> int:
    """Nightly: the rolling window moves and grace periods run out with time alone."""
    return services.evaluate_all_tiers(actor=Actor.system("nightly")).count


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def expire_coupons_task() -> int:
    return services.expire_coupons(actor=Actor.system("nightly")).count
