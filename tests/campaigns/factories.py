"""Factories for campaigns: segments, scripts, campaigns, runs and tasks."""

import datetime

import factory
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, Script, Segment, Task, TaskChannel
from tests.factories import MemberFactory, StoreFactory


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    name = factory.Sequence(lambda n: f"人群{n}")
    definition = factory.LazyFunction(lambda: {"op": "all", "items": []})


class ScriptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Script

    title = factory.Sequence(lambda n: f"话术{n}")
    body = "{name}您好，我是{store}的{guide}。"


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"活动{n}")
    segment = factory.SubFactory(SegmentFactory)
    script = factory.SubFactory(ScriptFactory)
    channel = TaskChannel.WECOM


class CampaignRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CampaignRun

    campaign = factory.SubFactory(CampaignFactory)
    occurrence = factory.Sequence(lambda n: f"run-{n}")
    state = CampaignRun.State.DONE


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    run = factory.SubFactory(CampaignRunFactory)
    store = factory.SubFactory(StoreFactory)
    member = factory.SubFactory(MemberFactory, home_store=factory.SelfAttribute("..store"))
    channel = TaskChannel.WECOM
    title = factory.LazyAttribute(lambda t: t.run.campaign.name if t.run.campaign else "任务")
    opens_at = factory.LazyFunction(timezone.now)
    due_at = factory.LazyFunction(lambda: timezone.now() + datetime.timedelta(days=3))


# --------------------------------------------------------------------------------------------------
# Dispatch: a brand of many stores and members, written in bulk (factories one row at a time are too
# slow for the 10,000-member tests)


def build_brand(
    *,
    stores: int,
    members_per_store: int,
    guides_per_store: int = 2,
    consent_flag: str = "consent_wecom",
    exclusive_every: int = 0,
    prefix: str = "B",
):
    """``stores`` stores, each with ``guides_per_store`` active guides and ``members_per_store``
    members consenting on ``consent_flag``; every ``exclusive_every``-th member is bound to the
    store's first guide (0: none). Returns (stores, {store id: [guide, ...]})."""
    from django.contrib.auth import get_user_model

    from members.models import Member
    from scrm.audit import app_audited
    from stores.models import Guide, Store
    from tests.factories import RegionFactory

    with app_audited():  # test data: the row triggers' audit events would only slow the setup down
        return _build_brand(
            stores=stores,
            members_per_store=members_per_store,
            guides_per_store=guides_per_store,
            consent_flag=consent_flag,
            exclusive_every=exclusive_every,
            prefix=prefix,
            models=(Member, Guide, Store, get_user_model()),
            region=RegionFactory(),
        )


def _build_brand(
    *, stores, members_per_store, guides_per_store, consent_flag, exclusive_every, prefix, models, region
):
    Member, Guide, Store, User = models
    made = Store.objects.bulk_create(
        [
            Store(code=f"{prefix}{i:04d}", name=f"门店{prefix}{i}", region=region, city="上海")
            for i in range(stores)
        ]
    )
    users = User.objects.bulk_create(
        [User(username=f"{prefix.lower()}g{i}-{j}") for i in range(stores) for j in range(guides_per_store)]
    )
    guides = Guide.objects.bulk_create(
        [
            Guide(
                user=users[i * guides_per_store + j],
                store=made[i],
                employee_no=f"{prefix}E{i:04d}{j:02d}",
                name=f"导购{prefix}{i}-{j}",
            )
            for i in range(stores)
            for j in range(guides_per_store)
        ]
    )
    by_store = {
        store.pk: guides[i * guides_per_store : (i + 1) * guides_per_store] for i, store in enumerate(made)
    }
    now = timezone.now()
    members = []
    for i, store in enumerate(made):
        for j in range(members_per_store):
            exclusive = exclusive_every and j % exclusive_every == 0 and by_store[store.pk]
            members.append(
                Member(
                    mobile=f"+86139{i:04d}{j:04d}" if prefix == "B" else f"+86137{i:04d}{j:04d}",
                    name=f"会员{i}-{j}",
                    home_store=store,
                    guide=by_store[store.pk][0] if exclusive else None,
                    joined_at=now - datetime.timedelta(days=100),
                    **{consent_flag: True},
                )
            )
    Member.objects.bulk_create(members, batch_size=5000)
    return made, by_store


def stores_segment(stores) -> Segment:
    """A segment of every member of these stores."""
    return SegmentFactory(
        definition={
            "op": "all",
            "items": [{"field": "home_store", "op": "in", "value": [s.pk for s in stores]}],
        }
    )
