from django.urls import path

from orgs.views import AuditView

urlpatterns = [
    path("audit", AuditView.as_view(), name="audit"),
]
