"""``scoped()`` on every model that declares scope paths, for every role, against a labelled world."""

import pytest

from members.models import Member, Order
from scrm.scoping import scope_of, scoped
from tests.guides.world import ALL_USERS, SCOPED_MODELS, build_world


@pytest.fixture
def world(db):
    return build_world()


def test_every_scoped_model_declares_scope_paths():
    # A model without scope_paths is HQ-only; this list must track the models that opted in.
    assert all(getattr(model, "scope_paths", None) is not None for model in SCOPED_MODELS)


@pytest.mark.parametrize("user_key", ALL_USERS)
def test_scoped_returns_exactly_the_users_rows_for_every_model(world, user_key):
    # given a world of two stores with every kind of scoped record, labelled by who may see it
    user = world.users[user_key]

    # when every model's full queryset passes through scoped()
    seen = {
        model.__name__: set(scoped(model.objects.all(), user).values_list("pk", flat=True))
        for model in SCOPED_MODELS
    }

    # then each model shows exactly the labelled rows, no more and no fewer
    expected = {model.__name__: world.expected(user_key, model) for model in SCOPED_MODELS}
    assert seen == expected


def test_the_world_is_not_trivial(world):
    # Guards the test above: every role must see something distinct, or the comparison proves little.
    members = {key: world.expected(key, Member) for key in ALL_USERS}
    assert len(members["hq_admin"]) == 10
    assert len(members["manager_A"]) == 6
    assert len(members["manager_B"]) == 4
    assert len(members["guide_A1"]) == 2
    assert members["no_role"] == members["left_guide"] == set()
    assert members["manager_A"].isdisjoint(members["manager_B"])


@pytest.mark.parametrize("user_key", ["hq_admin", "hq_operator", "auditor", "superuser"])
def test_hq_sees_everything_including_rows_with_no_store(world, user_key):
    assert scoped(Order.objects.filter(store__isnull=True), world.users[user_key]).count() == 1


def test_a_guide_who_left_sees_nothing_even_of_members_still_bound_to_them(world):
    left = world.users["left_guide"]
    assert Member.objects.filter(guide=world.staff["Al"]).count() == 1
    assert scope_of(left).role is None
    assert list(scoped(Member.objects.all(), left)) == []


def test_an_inactive_account_sees_nothing(world):
    user = world.users["guide_A1"]
    user.is_active = False
    user.save(update_fields=["is_active"])
    user.refresh_from_db()  # a fresh object: the role and scope are cached per user object
    assert list(scoped(Member.objects.all(), user)) == []


def test_scoped_keeps_the_callers_filters(world):
    manager = world.users["manager_A"]
    narrowed = scoped(Member.objects.filter(guide=world.staff["A1"]), manager)
    assert set(narrowed.values_list("pk", flat=True)) == {world.members["A1a"].pk, world.members["A1b"].pk}
    other_store = scoped(Member.objects.filter(guide=world.staff["B1"]), manager)
    assert list(other_store) == []
