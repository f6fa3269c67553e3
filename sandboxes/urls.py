from django.urls import path

from sandboxes import views

urlpatterns = [
    path("sandboxes/setup", views.SetupSandboxView.as_view(), name="sandbox-setup"),
    path("sandboxes", views.SandboxView.as_view(), name="sandbox"),
    path("sandboxes/file", views.SandboxFileView.as_view(), name="sandbox-file"),
    path("tasks/runs", views.RunsView.as_view(), name="runs"),
]
