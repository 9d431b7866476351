"""The demo brand opens with campaigns: every demo guide has tasks, assigned within their store."""

import pytest
from django.db.models import F

from campaigns.demo import DEMO_CAMPAIGN, seed_demo_campaigns
from campaigns.models import Campaign, Journey, Segment, Task
from members.demo_data import seed_demo

pytestmark = pytest.mark.django_db


def test_the_demo_campaign_gives_guides_tasks_in_their_own_store_and_seeds_once():
    seed_demo(members=600, seed=7)

    first = seed_demo_campaigns()
    again = seed_demo_campaigns()

    assert first.created and first.tasks > 0
    assert not again.created
    campaign = Campaign.objects.get(name=DEMO_CAMPAIGN)
    assert campaign.runs.get().state == "done"
    tasks = Task.objects.filter(run__campaign=campaign)
    assert tasks.count() == first.tasks
    assert not tasks.filter(guide__isnull=False).exclude(guide__store=F("store")).exists()
    assert not tasks.exclude(member__consent_wecom=True).exists()
    assert Segment.objects.count() == 3
    assert Journey.objects.get().active
