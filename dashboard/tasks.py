from celery import shared_task

from scrm.audit import Actor


@shared_task
def refresh_dashboard_task(full: bool = False) -> dict[str, int]:
    """Recent facts every half hour; everything the pages show nightly (``full``)."""
    from .refresh import refresh_dashboard

    return refresh_dashboard(actor=Actor.system("refresh_dashboard"), full=full)
