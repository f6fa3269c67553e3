"""The back office for webhooks: endpoints (add, disable) and events with each delivery attempt ("send again").

Adding an endpoint goes through the same service as `manage.py
create_webhook`; its secret is on the page answering the save, once. Events
and attempts are read-only: they are the record of what was sent.
"""

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_variables

from accounts.audit import Actor
from config.admin_display import AddFormMixin, secret_shown_once
from config.admin_readonly import ReadOnlyAdminMixin
from webhooks import delivery
from webhooks.models import EVENT_TYPES, DeliveryAttempt, Endpoint, Event
from webhooks.services import WebhookError, endpoint_create, endpoint_disable
from webhooks.transport import UnsafeUrl, url_check


class EndpointCreateForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https", label="URL")
    event_type_choices = forms.MultipleChoiceField(
        choices=[(name, name) for name in EVENT_TYPES], required=False, widget=forms.CheckboxSelectMultiple,
        label="Event types", help_text="None ticked: every event type.",
    )

    class Meta:
        model = Endpoint
        fields = ["account", "organization", "url"]

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            url_check(url)
        except UnsafeUrl as exc:
            raise forms.ValidationError(str(exc)) from None
        return url

    def clean(self):
        cleaned = super().clean()
        if bool(cleaned.get("account")) == bool(cleaned.get("organization")):
            raise forms.ValidationError("Choose an account or an organization (one of the two).")
        return cleaned


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ["number", "started_at", "duration_ms", "status_code", "succeeded", "error", "response_body"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Endpoint)
class EndpointAdmin(AddFormMixin, admin.ModelAdmin):
    list_display = ["id", "url", "owner", "types", "state", "failing_since", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["url", "account__email", "account__id", "organization__slug"]
    list_select_related = ["account", "organization"]
    autocomplete_fields = ["account"]
    actions = ["disable_selected_endpoints"]
    add_form = EndpointCreateForm
    created_template = "admin/webhooks/endpoint/created.html"
    detail_fields = ["url", "account", "organization", "types", "state", "failing_since", "created_at",
                     "previous_secret_expires_at"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["account", "organization", "url", "event_type_choices"]
        return self.detail_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.detail_fields

    @admin.display(description="receives events of")
    def owner(self, endpoint):
        return endpoint.owner_label

    @admin.display(description="event types")
    def types(self, endpoint):
        return ", ".join(endpoint.event_type_list) or "all"

    @admin.display(description="state")
    def state(self, endpoint):
        return "active" if endpoint.is_active else f"disabled: {endpoint.disabled_reason}"

    @sensitive_variables("secret")
    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing is edited after creation
        try:
            endpoint = endpoint_create(
                url=form.cleaned_data["url"], account=form.cleaned_data["account"],
                organization=form.cleaned_data["organization"],
                event_types=form.cleaned_data["event_type_choices"], actor=Actor.from_admin_request(request),
            )
        except WebhookError as exc:  # the form checked the same rules; the address may have changed since
            raise forms.ValidationError(str(exc)) from None
        obj.pk, obj.secret, obj.created_at, obj.event_types = (endpoint.pk, endpoint.secret, endpoint.created_at,
                                                                endpoint.event_types)
        obj._state.adding, obj._state.db = False, endpoint._state.db
        obj.secret_shown_once = endpoint.secret

    def response_add(self, request, obj, post_url_continue=None):
        secret = getattr(obj, "secret_shown_once", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        return secret_shown_once(self, request, title="Webhook endpoint created", original=obj, endpoint=obj,
                                 secret=secret)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # disable instead: its events and attempts stay on record

    def has_disable_permission(self, request):
        return request.user.has_perm("webhooks.disable_endpoint")

    @admin.action(description="Disable selected endpoints", permissions=["disable"])
    def disable_selected_endpoints(self, request, queryset):
        actor = Actor.from_admin_request(request)
        disabled = [endpoint for endpoint in queryset
                    if endpoint_disable(endpoint=endpoint, actor=actor, reason="disabled by staff")]
        self.message_user(request, f"Disabled {len(disabled)} endpoint(s); nothing more is sent to them.",
                          messages.SUCCESS)


class EventStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return Event.State.choices

    def queryset(self, request, queryset):
        return queryset.filter(state=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "type", "account_id", "endpoint_link", "state", "attempts", "next_attempt_at",
                    "created_at", "last_error"]
    list_filter = [EventStateFilter, "type", "endpoint"]
    search_fields = ["id", "account_id", "endpoint__url"]
    list_select_related = ["endpoint"]
    date_hierarchy = "created_at"
    fields = ["id", "type", "account_id", "endpoint", "state", "attempts", "next_attempt_at", "delivered_at",
              "last_error", "created_at", "body"]
    readonly_fields = fields
    inlines = [DeliveryAttemptInline]
    actions = ["send_again"]

    @admin.display(description="endpoint")
    def endpoint_link(self, event):
        return format_html('<a href="{}">#{} {}</a>', reverse("admin:webhooks_endpoint_change", args=[event.endpoint_id]),
                           event.endpoint_id, event.endpoint.url)

    def has_redeliver_permission(self, request):
        return request.user.has_perm("webhooks.redeliver_event")

    @admin.action(description="Send again", permissions=["redeliver"])
    def send_again(self, request, queryset):
        count = delivery.events_redeliver(events=queryset)
        self.message_user(request, f"Queued {count} event(s) to be sent again, with the same webhook-id.",
                          messages.SUCCESS)
