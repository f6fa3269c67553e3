from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.errors import not_found
from config.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("accounts.urls")),
    path("api/", include("orgs.urls")),
    path("api/", include("sandboxes.urls")),
    # Any other API path (with a trailing slash, a doubled one, any method): a JSON 404, even with DEBUG on
    # (Django's debug 404 page is HTML) and without a CSRF token (the API takes no cookies: the check's
    # answer would be Django's HTML 403 page).
    re_path(r"^(?:/*)api(/|$)", csrf_exempt(not_found)),
    re_path(r"^(?:/*)healthz", csrf_exempt(not_found)),
]

handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
