"""The organisation's admin: indexed search, and plain reference data saved with an audit event."""

import pytest
from django.urls import reverse

from scrm.models import AuditEvent
from scrm.roles import sync_role_groups
from stores.models import Guide, Region, Store
from tests.factories import GuideFactory, RegionFactory, StoreFactory

STORES = reverse("admin:stores_store_changelist")
GUIDES = reverse("admin:stores_guide_changelist")


@pytest.fixture(scope="session", autouse=True)
def role_permissions(django_db_setup, django_db_blocker):
    """Give the role groups every app's permissions (the post-migrate sync runs before some exist)."""
    with django_db_blocker.unblock():
        sync_role_groups()


def store_form(store: Store, **overrides) -> dict:
    data = {
        "code": store.code,
        "name": store.name,
        "region": store.region_id,
        "province": store.province,
        "city": store.city,
        "address": store.address,
        "status": store.status,
        "opened_on": "",
        "guides-TOTAL_FORMS": "0",
        "guides-INITIAL_FORMS": "0",
        "guides-MIN_NUM_FORMS": "0",
        "guides-MAX_NUM_FORMS": "0",
    }
    return data | overrides


def test_store_search_by_code_prefix_in_any_case(client, hq_admin):
    sh1, sh2 = StoreFactory(code="SH001"), StoreFactory(code="SH002")
    StoreFactory(code="BJ001")
    client.force_login(hq_admin)

    response = client.get(STORES, {"q": "sh0"})

    assert {s.pk for s in response.context["cl"].result_list} == {sh1.pk, sh2.pk}


def test_store_search_by_name_or_city_prefix(client, hq_admin):
    nanjing_road = StoreFactory(name="南京路店", city="上海")
    hangzhou = StoreFactory(name="西湖店", city="杭州")
    client.force_login(hq_admin)

    by_name = client.get(STORES, {"q": "南京"}).context["cl"].result_list
    by_city = client.get(STORES, {"q": "杭州"}).context["cl"].result_list

    assert [s.pk for s in by_name] == [nanjing_road.pk]
    assert [s.pk for s in by_city] == [hangzhou.pk]


def test_guide_search_by_employee_number_store_code_and_name(client, hq_admin):
    store = StoreFactory(code="GZ001")
    zhang = GuideFactory(store=store, employee_no="E1001", name="张敏")
    li = GuideFactory(employee_no="E1002", name="李娜")
    client.force_login(hq_admin)

    def search(term):
        return {g.pk for g in client.get(GUIDES, {"q": term}).context["cl"].result_list}

    assert search("E1002") == {li.pk}
    assert search("gz001") == {zhang.pk}
    assert search("张") == {zhang.pk}


def test_store_change_is_audited_with_old_and_new_values(client, hq_admin):
    store = StoreFactory(name="旧名字")
    client.force_login(hq_admin)
    url = reverse("admin:stores_store_change", args=[store.pk])

    response = client.post(url, store_form(store, name="新名字"))

    assert response.status_code == 302
    event = AuditEvent.objects.get(action="store.updated", target_id=str(store.pk))
    assert event.changes == {"name": ["旧名字", "新名字"]}
    assert event.actor == hq_admin
    assert event.store_id == store.pk
    # The admin's own event is the record: the database's catch-all trigger stood aside.
    assert not AuditEvent.objects.filter(action="db.update", target_type="stores.store").exists()


def test_saving_an_unchanged_store_writes_nothing(client, hq_admin):
    store = StoreFactory()
    client.force_login(hq_admin)

    response = client.post(reverse("admin:stores_store_change", args=[store.pk]), store_form(store))

    assert response.status_code == 302
    assert not AuditEvent.objects.filter(
        target_type="stores.store", action__in=["store.updated", "db.update"]
    )


def test_region_creation_and_deletion_are_audited(client, hq_admin):
    client.force_login(hq_admin)

    client.post(reverse("admin:stores_region_add"), {"code": "EAST", "name": "华东"})
    region = Region.objects.get(code="EAST")
    client.post(reverse("admin:stores_region_delete", args=[region.pk]), {"post": "yes"})

    created = AuditEvent.objects.get(action="region.created")
    deleted = AuditEvent.objects.get(action="region.deleted")
    assert created.changes == {"code": [None, "EAST"], "name": [None, "华东"]}
    assert deleted.changes == {"code": ["EAST", None], "name": ["华东", None]}
    assert deleted.target_id == str(region.pk)
    assert not Region.objects.filter(code="EAST").exists()


def test_guide_leaving_without_a_date_is_a_form_error(client, hq_admin):
    guide = GuideFactory()
    client.force_login(hq_admin)
    data = {
        "user": guide.user_id,
        "store": guide.store_id,
        "employee_no": guide.employee_no,
        "name": guide.name,
        "mobile": "",
        "position": guide.position,
        "status": Guide.Status.LEFT,
        "joined_on": "",
        "left_on": "",
    }

    response = client.post(reverse("admin:stores_guide_change", args=[guide.pk]), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    guide.refresh_from_db()
    assert guide.status == Guide.Status.ACTIVE


def test_auditor_cannot_change_a_store(client, auditor):
    store = StoreFactory(name="旧名字")
    client.force_login(auditor)

    response = client.post(reverse("admin:stores_store_change", args=[store.pk]), store_form(store, name="X"))

    assert response.status_code == 403
    store.refresh_from_db()
    assert store.name == "旧名字"


def test_region_list_counts_stores_in_one_query(client, hq_admin, django_assert_max_num_queries):
    for region in RegionFactory.create_batch(3):
        StoreFactory.create_batch(2, region=region)
    client.force_login(hq_admin)

    response = client.get(reverse("admin:stores_region_changelist"))

    assert [r._store_count for r in response.context["cl"].result_list] == [2, 2, 2]
