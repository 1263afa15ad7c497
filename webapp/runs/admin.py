from __future__ import annotations

from django.contrib import admin

from webapp.runs.models import AgentTask, Suggestion, WritingRun


class AgentTaskInline(admin.TabularInline):
    model = AgentTask
    extra = 0
    fields = ["role", "section", "status", "attempts", "words", "context_bytes", "adapter_version", "error"]
    readonly_fields = fields
    can_delete = False


@admin.register(WritingRun)
class WritingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "document", "status", "outline_path", "created_by", "created_at", "finished_at"]
    list_filter = ["status", "outline_path"]
    search_fields = ["document__title", "error"]
    raw_id_fields = ["document", "created_by"]
    inlines = [AgentTaskInline]


@admin.register(AgentTask)
class AgentTaskAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "role", "section", "status", "attempts", "words", "context_bytes", "heartbeat_at"]
    list_filter = ["status", "role"]
    search_fields = ["section__heading", "error"]
    raw_id_fields = ["run", "section"]


@admin.register(Suggestion)
class SuggestionAdmin(admin.ModelAdmin):
    list_display = ["id", "document", "section", "role", "kind", "status", "created_at", "decided_by"]
    list_filter = ["status", "kind", "role"]
    search_fields = ["original", "reason", "document__title"]
    raw_id_fields = ["document", "section", "run", "decided_by"]
