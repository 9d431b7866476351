"""Segment writes: validated, normalised, audited; a refused write changes nothing."""

import pytest
from django.core.exceptions import ValidationError
from django.utils import translation

from campaigns.models import Segment
from campaigns.segment_services import create_segment, update_segment
from scrm.audit import Actor
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.campaigns.factories import SegmentFactory
from tests.factories import TierFactory, UserFactory

pytestmark = pytest.mark.django_db

GOLD_WOMEN = {
    "op": "all",
    "items": [{"field": "gender", "op": "in", "value": ["F"]}, {"field": "age", "op": "gte", "value": "25"}],
}


@pytest.fixture
def actor():
    return Actor.for_user(UserFactory(username="seg_hq", role=Role.HQ_OPERATOR))


def test_create_segment_stores_the_normalised_tree_and_audits(actor):
    segment = create_segment(name=" 女性会员 ", definition=GOLD_WOMEN, actor=actor, description="25+")
    assert segment.name == "女性会员"
    assert segment.definition["items"][1] == {"field": "age", "op": "gte", "value": 25}
    assert segment.owner == actor.user
    event = AuditEvent.objects.get(action="segment.created")
    assert event.target_id == str(segment.pk)
    assert event.changes["definition"] == segment.definition


def test_create_segment_refuses_a_bad_definition_and_writes_nothing(actor):
    with translation.override("en"), pytest.raises(ValidationError, match="unknown field “salary”"):
        create_segment(
            name="bad",
            definition={"op": "all", "items": [{"field": "salary", "op": "gt", "value": 1}]},
            actor=actor,
        )
    assert not Segment.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="segment.").exists()


def test_create_segment_refuses_a_duplicate_name(actor):
    SegmentFactory(name="重复")
    with translation.override("en"), pytest.raises(ValidationError, match="already exists"):
        create_segment(name="重复", definition=GOLD_WOMEN, actor=actor)
    assert Segment.objects.count() == 1


def test_update_segment_audits_only_what_changed(actor):
    segment = create_segment(name="会员", definition=GOLD_WOMEN, actor=actor)
    gold = TierFactory(code="gold")
    new_definition = {"op": "any", "items": [{"field": "tier", "op": "in", "value": [gold.pk]}]}
    update_segment(segment, actor=actor, name="会员", definition=new_definition)
    segment.refresh_from_db()
    assert segment.definition == new_definition
    event = AuditEvent.objects.get(action="segment.updated")
    assert set(event.changes) == {"definition"}
    # nothing changed: nothing written
    update_segment(segment, actor=actor, name="会员", definition=new_definition)
    assert AuditEvent.objects.filter(action="segment.updated").count() == 1


def test_update_segment_refuses_a_bad_definition(actor):
    segment = create_segment(name="会员", definition=GOLD_WOMEN, actor=actor)
    with pytest.raises(ValidationError):
        update_segment(segment, actor=actor, definition={"op": "all", "negate": True, "items": []})
    segment.refresh_from_db()
    assert segment.definition["op"] == "all" and len(segment.definition["items"]) == 2
