from django.urls import path

from sandboxes import views

urlpatterns = [
    path("sandboxes/setup", views.SetupSandboxView.as_view(), name="sandbox-setup"),
    path("sandboxes", views.SandboxView.as_view(), name="sandbox"),
    path("sandboxes/file", views.SandboxFileView.as_view(), name="sandbox-file"),
    path("sandboxes/commands", views.SandboxCommandsView.as_view(), name="sandbox-commands"),
    path("sandboxes/files", views.SandboxFilesView.as_view(), name="sandbox-files"),
    path("sandboxes/stop", views.SandboxStopView.as_view(), name="sandbox-stop"),
    path("tasks/runs", views.RunsView.as_view(), name="runs"),
]
