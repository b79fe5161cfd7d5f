"""Django admin: services and instances as Consul and traces show them, and the actions that write to Consul.

What Consul owns is read-only here: an operator changes it through an action, on a confirmation page,
with a permission of its own (see ``Instance.Meta.permissions``). The actions are UI over
``collectors.consul_actions``, which keeps the rules, writes to Consul and updates the rows. When Consul
refuses, the operator reads Consul's own message; when it accepts, an admin log entry records who did what.
"""

import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.validators import URLValidator
from django.db.models import Count, Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from collectors import consul_actions, consul_client
from collectors.consul_actions import Location, PartlyWritten
from collectors.consul_client import ConsulWriteError
from collectors.consul_reconcile import POLICY_META_KEY
from topology.models import DeadLetter, Instance, Service, SourceStatus
from topology.models.services import BalancingPolicy

CONFIRMATION_TEMPLATE = "admin/topology/consul_confirmation.html"
# Consul's rule for service meta keys (https://developer.hashicorp.com/consul/docs/services/configuration/services-configuration-reference#meta).
META_KEY = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")

_M = TypeVar("_M", bound=Model)


def has_perm(codename: str) -> Callable[[Any, HttpRequest], bool]:
    """A ``has_<codename>_permission`` method for the admin actions of that name."""

    def check(self: Any, request: HttpRequest) -> bool:
        return request.user.has_perm(f"topology.{codename}")

    return check


# --- forms -------------------------------------------------------------------------------------------


class WeightsForm(forms.Form):
    # Consul's rule: Passing at least 1, Warning at least 0.
    passing = forms.IntegerField(min_value=1, max_value=65535, initial=1)
    warning = forms.IntegerField(min_value=0, max_value=65535, initial=1)


class MaintenanceForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False, help_text="Shown in Consul and here.")


class PolicyForm(forms.Form):
    policy = forms.ChoiceField(choices=BalancingPolicy.choices)


class RegisterInstanceForm(WeightsForm):
    service = forms.CharField(max_length=255)
    service_id = forms.CharField(max_length=255, required=False, help_text="Defaults to the service name.")
    address = forms.CharField(max_length=255, required=False, help_text="Defaults to the agent's address.")
    port = forms.IntegerField(min_value=1, max_value=65535, required=False)
    tags = forms.CharField(required=False, help_text="Separated by commas.")
    meta = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False, help_text="One key=value a line.")
    check_type = forms.ChoiceField(choices=[("", "No check"), ("http", "HTTP"), ("tcp", "TCP")], required=False)
    check_target = forms.CharField(required=False, help_text="A URL for HTTP, host:port for TCP.")
    check_interval = forms.RegexField(regex=r"^\d+(ms|s|m)$", initial="10s")
    check_timeout = forms.RegexField(regex=r"^\d+(ms|s|m)$", initial="5s")
    field_order = ["service", "service_id", "address", "port", "tags", "meta", "passing", "warning"]

    def clean_tags(self) -> list[str]:
        return [tag.strip() for tag in self.cleaned_data["tags"].split(",") if tag.strip()]

    def clean_meta(self) -> dict[str, str]:
        meta = {}
        for line in self.cleaned_data["meta"].splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not META_KEY.match(key.strip()):
                raise forms.ValidationError(f"“{line}” is not key=value with a key of letters, digits, - and _.")
            meta[key.strip()] = value.strip()
        return meta

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        kind, target = data.get("check_type"), data.get("check_target", "").strip()
        if kind == "http":
            try:
                URLValidator(schemes=["http", "https"])(target)
            except forms.ValidationError:
                self.add_error("check_target", "An HTTP check needs an http:// or https:// URL.")
        elif kind == "tcp":
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                self.add_error("check_target", "A TCP check needs host:port.")
        return data

    def consul_check(self) -> dict[str, Any] | None:
        data = self.cleaned_data
        target, interval, timeout = data["check_target"].strip(), data["check_interval"], data["check_timeout"]
        if data["check_type"] == "http":
            return consul_client.http_check(target, interval, timeout)
        if data["check_type"] == "tcp":
            host, _, port = target.rpartition(":")
            return consul_client.tcp_check(host, int(port), interval, timeout)
        return None


# --- list filters --------------------------------------------------------------------------------------


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("consul", "Consul only"), ("traces", "Traces only"), ("both", "Both")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        by_source: dict[str | None, QuerySet[Any]] = {
            "consul": queryset.filter(in_consul=True, in_traces=False),
            "traces": queryset.filter(in_consul=False, in_traces=True),
            "both": queryset.filter(in_consul=True, in_traces=True),
        }
        return by_source.get(self.value(), queryset)


class RegisteredFilter(admin.SimpleListFilter):
    title = "registration"
    parameter_name = "registered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Registered"), ("no", "Deregistered")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(deregistered_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(deregistered_at__isnull=False)
        return queryset


# --- the confirmation pages ---------------------------------------------------------------------------


if TYPE_CHECKING:
    # What the mixin uses of the ModelAdmin it is mixed into (message_user, log_change, admin_site, model).
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = object


class OutsideNames:
    """Names, tags and meta from spans and Consul come without spaces and up to 512 characters long: the
    stylesheet keeps the admin's pages that show them in the window."""

    css = {"all": ["css/admin.css"]}


class ConsulActionsMixin(_ModelAdmin):
    """Runs an action on each selected object after a confirmation page, reporting Consul's own errors."""

    def agent_location(self, request: HttpRequest) -> Location | None:
        """(node, datacenter) of the agent at CONSUL_HTTP_ADDR, or None after telling the operator why not."""
        try:
            return consul_actions.agent_location()
        except ConsulWriteError as error:
            self.message_user(request, f"Nothing was changed: {error}", messages.ERROR)
            return None

    def confirm(
        self,
        request: HttpRequest,
        objects: Sequence[Model],
        action: str,
        title: str,
        form_class: type[forms.Form] | None = None,
        warning: str = "",
    ) -> dict[str, Any] | TemplateResponse | None:
        """The validated form once the operator confirmed, else the confirmation page to show."""
        if not objects:
            self.message_user(request, "Nothing to do.", messages.WARNING)
            return None
        form = form_class(request.POST if "confirm" in request.POST else None) if form_class else None
        if "confirm" in request.POST and (form is None or form.is_valid()):
            return form.cleaned_data if form else {}
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "objects": objects,
            "form": form,
            "action": action,
            "warning": warning,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, CONFIRMATION_TEMPLATE, context)

    def write_each(
        self, request: HttpRequest, objects: Sequence[_M], write: Callable[[_M], None], log_message: str
    ) -> None:
        """Calls ``write(obj)`` for each object; logs the successes and reports each failure."""
        done = 0
        for obj in objects:
            try:
                write(obj)
            except ConsulWriteError as error:
                self.message_user(request, f"{obj}: {error}", messages.ERROR)
                if isinstance(error, PartlyWritten):
                    self.log_change(request, obj, error.log_message)  # Consul did change: the log must say so
                continue
            self.log_change(request, obj, log_message)
            done += 1
        if done:
            self.message_user(request, f"Consul accepted the change for {done} of {len(objects)}.", messages.SUCCESS)


# --- services ------------------------------------------------------------------------------------------


# What an instance shows, in the service's inline and in the instances list (which adds its service).
INSTANCE_COLUMNS = [
    "identity",
    "consul_id",
    "node",
    "address",
    "port",
    "datacenter",
    "health",
    "in_maintenance",
    "weight_passing",
    "weight_warning",
    "in_consul",
    "in_traces",
    "deregistered_at",
]


class InstanceInline(admin.TabularInline):
    model = Instance
    extra = 0
    can_delete = False
    show_change_link = True
    readonly_fields = INSTANCE_COLUMNS
    fields = [*readonly_fields]

    def has_add_permission(self, request: HttpRequest, obj: Service | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Instance | None = None) -> bool:
        return False


@admin.register(Service)
class ServiceAdmin(ConsulActionsMixin, admin.ModelAdmin):
    Media = OutsideNames
    list_display = [
        "name",
        "health_summary",
        "instance_count",
        "source",
        "balancing_policy_shown",
        "datacenter",
        "last_seen",
        "deregistered_at",
    ]
    list_filter = [SourceFilter, RegisteredFilter, "balancing_policy", "datacenter"]
    search_fields = ["name", "instances__identity", "instances__consul_id", "instances__address"]
    inlines = [InstanceInline]
    actions = ["set_balancing_policy"]
    consul_fields = [
        "name",
        "in_consul",
        "in_traces",
        "datacenter",
        "tags",
        "first_seen",
        "last_seen",
        "deregistered_at",
    ]
    readonly_fields = consul_fields
    fields = [*consul_fields, "balancing_policy"]

    has_set_balancing_policy_permission = has_perm("set_balancing_policy")
    has_register_in_consul_permission = has_perm("register_in_consul")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # services come from Consul and from traces; "Register an instance" adds to Consul

    def has_delete_permission(self, request: HttpRequest, obj: Service | None = None) -> bool:
        return False  # history and traces point at services: they are marked deregistered, never deleted

    def get_readonly_fields(self, request: HttpRequest, obj: Service | None = None) -> list[str]:
        # A Consul service's policy lives in Consul: the action changes it there.
        return self.consul_fields + (["balancing_policy"] if obj is None or obj.in_consul else [])

    def get_queryset(self, request: HttpRequest) -> QuerySet[Service]:
        live = Q(instances__deregistered_at__isnull=True)
        return (
            super()
            .get_queryset(request)
            .annotate(
                live_instances=Count("instances", filter=live, distinct=True),
                passing=Count("instances", filter=live & Q(instances__health="passing"), distinct=True),
                warning=Count("instances", filter=live & Q(instances__health="warning"), distinct=True),
                critical=Count("instances", filter=live & Q(instances__health="critical"), distinct=True),
            )
        )

    @admin.display(description="health")
    def health_summary(self, service):
        return f"{service.passing} passing · {service.warning} warning · {service.critical} critical"

    @admin.display(description="instances", ordering="live_instances")
    def instance_count(self, service):
        return service.live_instances

    @admin.display(description="balancing policy", ordering="balancing_policy")
    def balancing_policy_shown(self, service: Service) -> str:
        return service.get_balancing_policy_display() or "not set (round robin assumed)"

    def get_urls(self) -> list[URLPattern]:
        register = self.admin_site.admin_view(self.register_instance_view)
        return [path("register-instance/", register, name="topology_service_register_instance"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_register": self.has_register_in_consul_permission(request)}
        return super().changelist_view(request, extra_context)

    @admin.action(description="Set the balancing policy in Consul…", permissions=["set_balancing_policy"])
    def set_balancing_policy(self, request: HttpRequest, queryset: QuerySet[Service]) -> HttpResponse | None:
        services = list(queryset)
        confirmed = self.confirm(
            request,
            services,
            "set_balancing_policy",
            "Set the balancing policy",
            PolicyForm,
            warning=f"Every Consul instance of these services is registered again with the meta key "
            f"“{POLICY_META_KEY}”. Services Consul does not know keep the policy in meshscope only.",
        )
        if not isinstance(confirmed, dict):
            return confirmed
        policy = confirmed["policy"]
        # Asked once, and only when a service has instances in Consul: a traces-only service needs no agent.
        location = functools.cache(consul_actions.agent_location)

        def write(service: Service) -> None:
            consul_actions.set_balancing_policy(service, policy, location)

        self.write_each(
            request, services, write, f"Set the balancing policy to {policy} (Consul meta {POLICY_META_KEY})."
        )
        return None

    def register_instance_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_register_in_consul_permission(request):
            raise PermissionDenied
        form = RegisterInstanceForm(request.POST or None, initial={"service": request.GET.get("service", "")})
        confirming = request.method == "POST" and form.is_valid()
        if confirming and "confirm" in request.POST:
            data = form.cleaned_data
            try:
                instance_id = consul_actions.register(
                    data["service"],
                    data["service_id"],
                    data["address"],
                    data["port"],
                    data["tags"],
                    data["meta"],
                    {"Passing": data["passing"], "Warning": data["warning"]},
                    form.consul_check(),
                    consul_actions.agent_location(),
                )
            except ConsulWriteError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                service = Service.objects.get(name=data["service"])
                self.log_change(request, service, f"Registered the instance {instance_id} in Consul.")
                self.message_user(
                    request, f"Consul registered {instance_id}; the collector reads it on its next round."
                )
                return redirect(reverse("admin:topology_service_change", args=[service.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Confirm the registration in Consul" if confirming else "Register an instance in Consul",
            "opts": self.model._meta,
            "form": form,
            "confirming": confirming,
        }
        return TemplateResponse(request, "admin/topology/register_instance.html", context)


# --- instances -----------------------------------------------------------------------------------------


@admin.register(Instance)
class InstanceAdmin(ConsulActionsMixin, admin.ModelAdmin):
    Media = OutsideNames
    list_display = [INSTANCE_COLUMNS[0], "service", *INSTANCE_COLUMNS[1:]]
    list_filter = [RegisteredFilter, "health", "in_maintenance", "in_consul", "in_traces", "datacenter"]
    list_select_related = ["service"]
    search_fields = ["identity", "consul_id", "address", "node", "service__name"]
    actions = ["deregister", "enable_maintenance", "disable_maintenance", "change_weights"]

    has_deregister_from_consul_permission = has_perm("deregister_from_consul")
    has_set_maintenance_in_consul_permission = has_perm("set_maintenance_in_consul")
    has_set_weights_in_consul_permission = has_perm("set_weights_in_consul")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Instance | None = None) -> bool:
        return False  # Consul and traces own every field; the actions change Consul

    def has_delete_permission(self, request: HttpRequest, obj: Instance | None = None) -> bool:
        return False

    def consul_listed(self, request, queryset):
        """The selected instances the agent at CONSUL_HTTP_ADDR can act on, and where that agent is; the
        others are reported and left out."""
        instances = list(queryset.select_related("service"))
        usable = [i for i in instances if consul_actions.is_listed(i)]
        if len(usable) < len(instances):
            self.message_user(
                request, "Skipped instances that Consul does not list (traces only or deregistered).", messages.WARNING
            )
        if not usable:
            return usable, None
        location = self.agent_location(request)
        if location is None:
            return [], None
        elsewhere = consul_actions.elsewhere(usable, location)
        if elsewhere:
            self.message_user(request, consul_actions.refusal(elsewhere, location), messages.ERROR)
        return [i for i in usable if i not in elsewhere], location

    @admin.action(description="Deregister from Consul…", permissions=["deregister_from_consul"])
    def deregister(self, request, queryset):
        instances, location = self.consul_listed(request, queryset)
        confirmed = self.confirm(request, instances, "deregister", "Deregister from Consul")
        if not isinstance(confirmed, dict):
            return confirmed
        self.write_each(
            request, instances, lambda i: consul_actions.deregister(i, location), "Deregistered from Consul."
        )
        return None

    @admin.action(description="Enable maintenance mode in Consul…", permissions=["set_maintenance_in_consul"])
    def enable_maintenance(self, request, queryset):
        instances, location = self.consul_listed(request, queryset)
        confirmed = self.confirm(request, instances, "enable_maintenance", "Enable maintenance mode", MaintenanceForm)
        if not isinstance(confirmed, dict):
            return confirmed
        reason = confirmed["reason"]
        self.write_each(
            request,
            instances,
            lambda i: consul_actions.set_maintenance(i, True, location, reason),
            f"Enabled maintenance mode in Consul. Reason: {reason or 'none given'}",
        )
        return None

    @admin.action(description="Disable maintenance mode in Consul…", permissions=["set_maintenance_in_consul"])
    def disable_maintenance(self, request, queryset):
        instances, location = self.consul_listed(request, queryset)
        confirmed = self.confirm(request, instances, "disable_maintenance", "Disable maintenance mode")
        if not isinstance(confirmed, dict):
            return confirmed
        self.write_each(
            request,
            instances,
            lambda i: consul_actions.set_maintenance(i, False, location),
            "Disabled maintenance mode in Consul.",
        )
        return None

    @admin.action(description="Change weights in Consul…", permissions=["set_weights_in_consul"])
    def change_weights(self, request, queryset):
        instances, location = self.consul_listed(request, queryset)
        confirmed = self.confirm(request, instances, "change_weights", "Change weights", WeightsForm)
        if not isinstance(confirmed, dict):
            return confirmed
        passing, warning = confirmed["passing"], confirmed["warning"]
        self.write_each(
            request,
            instances,
            lambda i: consul_actions.set_weights(i, passing, warning, location),
            f"Set weights in Consul: passing {passing}, warning {warning}.",
        )
        return None


# --- read-only views of the collectors' own records -----------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    Media = OutsideNames

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ["reason", "topic", "partition", "offset", "received_at"]
    list_filter = ["reason"]


@admin.register(SourceStatus)
class SourceStatusAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "configured",
        "is_stale",
        "stale_since",
        "stale_reason",
        "last_success",
        "consecutive_failures",
    ]

    @admin.display(boolean=True, description="stale")
    def is_stale(self, status: SourceStatus) -> bool:
        return status.is_stale
