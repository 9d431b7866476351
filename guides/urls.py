from django.urls import path

from . import manager_views, views, work_views

app_name = "guides"

urlpatterns = [
    path("", views.member_list, name="members"),
    path("today/", work_views.today, name="today"),
    path("tasks/<int:pk>/", work_views.task_detail, name="task"),
    path("tasks/<int:pk>/complete/", work_views.task_complete, name="task_complete"),
    path("tasks/<int:pk>/reveal/", work_views.task_reveal, name="task_reveal"),
    path("numbers/", work_views.my_numbers, name="numbers"),
    path("members/<int:pk>/", views.member_detail, name="member"),
    path("members/<int:pk>/reveal/", views.member_reveal, name="reveal"),
    path("members/<int:pk>/notes/", views.member_note, name="member_note"),
    path("members/<int:pk>/tags/", views.member_tag, name="member_tag"),
    path("export/", views.member_export, name="export"),
    path("store/", manager_views.store_board, name="store"),
    path("store/tasks/", manager_views.reassign_tasks_view, name="reassign_tasks"),
    path("store/members/", manager_views.reassign_members_view, name="reassign_members"),
    path("store/offboard/", manager_views.offboard, name="offboard"),
    path("manifest.webmanifest", work_views.manifest, name="manifest"),
]
