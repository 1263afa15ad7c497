from __future__ import annotations

from django.contrib import admin, messages

from webapp.registry import services
from webapp.registry.models import AdapterVersion, BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "roles", "path", "short_sha256", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "path", "notes"]
    readonly_fields = ["sha256", "status", "created_at"]
    actions = ["activate"]

    @admin.display(description="sha256")
    def short_sha256(self, obj: BaseModel) -> str:
        return obj.sha256[:12]

    @admin.action(description="Serve the selected base model (workers load it on their next start)")
    def activate(self, request, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one base model.", messages.ERROR)
            return
        model = services.base_model_activate(model=queryset.get())
        self.message_user(request, f"{model.name} is now the active base model.")


@admin.register(AdapterVersion)
class AdapterVersionAdmin(admin.ModelAdmin):
    list_display = ["role", "version", "status", "base_model", "activated_at", "created_at", "metrics"]
    list_filter = ["status", "role", "base_model"]
    search_fields = ["role", "path", "notes"]
    readonly_fields = ["sha256", "status", "activated_at", "created_at", "version"]
    actions = ["activate", "roll_back"]

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
