"""factory_boy factories shared by every test folder."""

import datetime
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from members.models import Channel, Member, Order, OrderLine, Tag, Tier
from scrm.roles import HQ_ROLES, Role
from stores.models import Guide, Region, Store


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests")

    @factory.post_generation
    def role(self, create: bool, extracted: str | None, **kwargs: object) -> None:
        if extracted:
            self.groups.add(Group.objects.get(name=extracted))
            if extracted in HQ_ROLES:
                self.is_staff = True
                self.save(update_fields=["is_staff"])


class RegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Region
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"R{n:02d}")
    name = factory.Sequence(lambda n: f"区域{n}")


class StoreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Store

    code = factory.Sequence(lambda n: f"S{n:04d}")
    name = factory.Sequence(lambda n: f"测试门店{n}")
    region = factory.SubFactory(RegionFactory)
    city = "上海"


class GuideFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Guide

    user = factory.SubFactory(UserFactory, role=Role.GUIDE)
    store = factory.SubFactory(StoreFactory)
    employee_no = factory.Sequence(lambda n: f"E{n:05d}")
    name = factory.Sequence(lambda n: f"导购{n}")
    position = Guide.Position.GUIDE


class ManagerFactory(GuideFactory):
    user = factory.SubFactory(UserFactory, role=Role.STORE_MANAGER)
    position = Guide.Position.MANAGER
    name = factory.Sequence(lambda n: f"店长{n}")


class TierFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tier
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"tier{n}")
    name = factory.Sequence(lambda n: f"等级{n}")
    rank = factory.Sequence(lambda n: n + 1)


class TagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tag
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"标签{n}")


class MemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Member

    mobile = factory.Sequence(lambda n: f"+86138{n:08d}")
    name = factory.Sequence(lambda n: f"会员{n}")
    home_store = factory.SubFactory(StoreFactory)
    joined_at = factory.LazyFunction(lambda: timezone.now() - datetime.timedelta(days=200))


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    channel = Channel.STORE
    external_no = factory.Sequence(lambda n: f"NO{n:08d}")
    member = factory.SubFactory(MemberFactory)
    store = factory.LazyAttribute(lambda o: o.member.home_store if o.member else None)
    paid_at = factory.LazyFunction(lambda: timezone.now() - datetime.timedelta(days=10))
    amount = Decimal("199.00")
    item_count = 1


class OrderLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrderLine

    order = factory.SubFactory(OrderFactory)
    line_no = factory.Sequence(lambda n: n % 30000 + 1)
    sku = factory.Sequence(lambda n: f"SKU{n:05d}")
    category = "护肤"
    quantity = 1
    amount = Decimal("199.00")
