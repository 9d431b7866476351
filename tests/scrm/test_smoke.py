from django.contrib.auth.models import Group

from scrm.roles import Role


def test_every_role_exists_as_a_group_after_migrate(db):
    assert set(Group.objects.values_list("name", flat=True)) >= {r.value for r in Role}
