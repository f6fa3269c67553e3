"""How the back office shows things: state in words with one colour per meaning, times, and short ids.

The colours are defined once (templates/admin/base_site.html): `good` (valid,
completed, active), `bad` (expired, failed, revoked), `waiting` (queued,
executing) and `neutral` (canceled, none).
"""

from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

TONES = ("good", "bad", "waiting", "neutral")


def state_badge(word: str, tone: str):
    """`word` (e.g. "expired") in the colour of its meaning."""
    assert tone in TONES, tone
    return format_html('<span class="state state-{}">{}</span>', tone, word)


def short_id(value, *, keep: int = 12) -> str:
    """The start of a long id (a run id, a UUID), enough to tell rows apart; the page shows it whole."""
    text = str(value)
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def summary(text: str, *, limit: int = 70) -> str:
    """The first line of `text`, cut at a word near `limit` characters."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return cut + " …"


class ReturnToPageAfterActionMixin:
    """A list action posted from an object's page (its buttons) goes back to that page when it is done.

    The button posts the action, the selected row and `next`, the page's own
    path; an action that answers with a page of its own (a confirmation)
    hands `next` on, and the redirect that ends it goes to `next` instead of
    the list. Only a path on this site is followed.
    """

    def response_action(self, request, queryset):
        response = super().response_action(request, queryset)
        back_to = page_to_return_to(request)
        if back_to and isinstance(response, HttpResponseRedirect):
            return HttpResponseRedirect(back_to)
        return response


def page_to_return_to(request) -> str:
    """The `next` path of a POST, when it is a path on this site; else ""."""
    back_to = request.POST.get("next", "")
    if back_to.startswith("/") and url_has_allowed_host_and_scheme(
        back_to, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return back_to
    return ""


def secret_shown_once(model_admin, request, *, title: str, original, **context) -> TemplateResponse:
    """The page answering the POST that made a secret (an API key, a webhook's signing secret): the one place
    it is ever shown (templates/admin/shown_once.html).

    Answered directly, never through a redirect and a message: a message would
    keep the secret in the session or a cookie until it is shown.
    """
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, model_admin.created_template, {
        **model_admin.admin_site.each_context(request), "title": title, "subtitle": None, "opts": model_admin.opts,
        "original": original, **context,
    })


class AddFormMixin:
    """A ModelAdmin whose add page uses a form of its own (`add_form`), as Django's UserAdmin does."""

    add_form = None

    def get_form(self, request, obj=None, **kwargs):
        if obj is None and self.add_form is not None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)
