from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from webapp.celery import enqueue
from webapp.registry import services
from webapp.registry.models import AdapterVersion, BaseModel


class OverrideForm(forms.Form):
    why = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                          help_text="Why it should be active although the promotion gate has not passed it (kept "
                                    "with the version, with your name).")


class GatedAdmin(admin.ModelAdmin):
    """What the gate found, and the actions that measure and override it."""

    gate_fields = ["gate_result", "gate_table", "override"]

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), *self.gate_fields]

    @admin.display(description="promotion gate")
    def gate_result(self, obj) -> str:
        return obj.gate_summary()

    @admin.display(description="the gate's comparison")
    def gate_table(self, obj) -> str:
        if not obj.gate.get("candidate"):
            return "—"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (arm["version"], f'{arm["off"]["defects"]:.2f}', f'{arm["on"]["defects"]:.2f}', f'{arm["on"]["S_l"]:.1f}',
             f'{arm["on"]["words"]:.0f}') for arm in (obj.gate["candidate"], obj.gate["active"])))
        briefs = obj.gate.get("briefs", {})
        return format_html('<table class="gate"><tr><th>version</th><th>summed defects %, filter off</th>'
                           "<th>summed defects %, filter on</th><th>S_l, filter on</th><th>words</th></tr>{}</table>"
                           "held-out briefs {} of {} (test half, at most {} words), seed {}, measured {}", rows,
                           briefs.get("numbers"), briefs.get("file"), briefs.get("max_words"), obj.gate.get("seed"),
                           obj.gate.get("measured_at"))

    @admin.action(description="Measure the selected versions with the promotion gate (on a training worker)")
    def measure(self, request, queryset) -> None:
        kind = "adapter" if self.model is AdapterVersion else "model"
        for version in queryset:
            enqueue(services.GATE_TASK, kind, version.pk, False)
        self.message_user(request, f"{queryset.count()} queued; the gate writes held-out briefs with each (minutes "
                                   "on a CPU), and its result shows here.")

    @admin.action(description="Activate the selected version although the gate has not passed it (override)…")
    def activate_with_override(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version to override the gate for.", messages.ERROR)
            return None
        version = queryset.get()
        form = OverrideForm(request.POST if "why" in request.POST else None)
        if form.is_valid():
            try:
                services.activate(version, services.Override(by=request.user.get_username(),
                                                             why=form.cleaned_data["why"]))
            except services.RegistryError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"{version} is active, by your override (recorded with it).")
            return None
        return TemplateResponse(request, "admin/registry/override.html", {
            **self.admin_site.each_context(request), "title": f"Override the promotion gate for {version}",
            "version": version, "form": form, "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME})


@admin.register(BaseModel)
class BaseModelAdmin(GatedAdmin):
    list_display = ["name", "status", "gate_result", "roles", "path", "short_sha256", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "path", "notes"]
    readonly_fields = ["sha256", "status", "created_at"]
    actions = ["activate", "measure", "activate_with_override"]

    @admin.display(description="sha256")
    def short_sha256(self, obj: BaseModel) -> str:
        return obj.sha256[:12]

    @admin.action(description="Serve the selected base model (workers load it on their next start)")
    def activate(self, request, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one base model.", messages.ERROR)
            return
        try:
            model = services.base_model_activate(model=queryset.get())
        except services.RegistryError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.message_user(request, f"{model.name} is now the active base model.")


@admin.register(AdapterVersion)
class AdapterVersionAdmin(GatedAdmin):
    list_display = ["role", "version", "status", "gate_result", "base_model", "activated_at", "created_at"]
    list_filter = ["status", "role", "base_model"]
    search_fields = ["role", "path", "notes"]
    readonly_fields = ["sha256", "status", "activated_at", "created_at", "version"]
    actions = ["activate", "measure", "activate_with_override", "roll_back"]

    @admin.action(description="Activate the selected version for its role")
    def activate(self, request, queryset) -> None:
        if queryset.values("role").distinct().count() != queryset.count():
            self.message_user(request, "Choose at most one version per role.", messages.ERROR)
            return
        for adapter in queryset:
            try:
                services.adapter_activate(adapter=adapter)
            except services.RegistryError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"{adapter.name} is now active; the next request uses it.")

    @admin.action(description="Roll the selected versions' roles back to their previous version")
    def roll_back(self, request, queryset) -> None:
        for role in sorted(set(queryset.values_list("role", flat=True))):
            try:
                adapter = services.adapter_rollback(role=role)
            except services.RegistryError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"{role} rolled back to {adapter.name}.")
