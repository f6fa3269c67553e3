from django.urls import path

from accounts.views import AuditView, PingView

urlpatterns = [
    path("ping", PingView.as_view(), name="ping"),
    path("audit", AuditView.as_view(), name="audit"),
]
