from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard import views as dashboard_views

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(template_name="registration/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("m/", include("guides.urls")),
    path("api/v1/", include("api.urls")),
    path("admin/exports/", include("scrm.export_views")),
    path("admin/imports/", include("scrm.import_views")),
    # The HQ dashboard is the admin's home page for HQ (the model index stays below it).
    path("admin/dashboard/", include("dashboard.urls")),
    path("admin/", dashboard_views.home),
    path("admin/", admin.site.urls),
]
