from django.urls import path

from . import views

app_name = "guides"

urlpatterns = [
    path("", views.member_list, name="members"),
    path("members/<int:pk>/", views.member_detail, name="member"),
    path("members/<int:pk>/reveal/", views.member_reveal, name="reveal"),
    path("export/", views.member_export, name="export"),
]
