from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from . import (
    guide_app,
    schema,  # noqa: F401 (registers the authentication schemes)
    views,
)

app_name = "api"
PUBLIC = {"authentication_classes": [], "permission_classes": [AllowAny]}

urlpatterns = [
    # The schema and its reference pages are public: they describe the API, they hold no data.
    path("schema/", SpectacularAPIView.as_view(**PUBLIC), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema", **PUBLIC), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema", **PUBLIC), name="redoc"),
    path("members/", views.MemberUpsertApi.as_view(), name="member-upsert"),
    path("members/lookup/", views.MemberLookupApi.as_view(), name="member-lookup"),
    path("members/<int:pk>/", views.MemberDetailApi.as_view(), name="member-detail"),
    path("members/<int:pk>/consent/", views.MemberConsentApi.as_view(), name="member-consent"),
    path("orders/", views.OrderCreateApi.as_view(), name="order-create"),
    path("orders/batch/", views.OrderBatchApi.as_view(), name="order-batch"),
    path("orders/<str:channel>/<str:order_no>/", views.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<str:channel>/<str:order_no>/refund/", views.OrderRefundApi.as_view(), name="order-refund"),
    path("orders/<str:channel>/<str:order_no>/cancel/", views.OrderCancelApi.as_view(), name="order-cancel"),
    path("guide-bindings/", views.GuideBindingApi.as_view(), name="guide-binding"),
    path("guide/token/", guide_app.GuideTokenApi.as_view(), name="guide-token"),
    path("guide/tasks/", guide_app.GuideTaskListApi.as_view(), name="guide-tasks"),
    path(
        "guide/tasks/<int:pk>/complete/", guide_app.GuideTaskCompleteApi.as_view(), name="guide-task-complete"
    ),
    # Anything else under /api/v1/ is a 404 in the API's JSON shape, not the site's HTML page.
    re_path(r"^", views.unknown_endpoint),
]
