from __future__ import annotations

from django.contrib import admin

from webapp.documents.models import Document, Revision, Section, Source, SourceChunk


class SectionInline(admin.TabularInline):
    model = Section
    extra = 0
    fields = ["heading", "parent", "order", "word_budget", "status", "pinned", "version"]
    readonly_fields = ["version"]
    show_change_link = True


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "target_words", "language", "created_by", "updated_at"]
    list_filter = ["language", "auto_approve_outline", "updated_at"]
    search_fields = ["title", "topic", "project__name"]
    raw_id_fields = ["project", "created_by"]
    inlines = [SectionInline]


@admin.register(Section)
class SectionAdmin(admin.ModelAdmin):
    list_display = ["heading", "document", "parent", "order", "word_budget", "status", "pinned", "version",
                    "updated_at"]
    list_filter = ["status", "pinned"]
    search_fields = ["heading", "goal", "text", "document__title"]
    raw_id_fields = ["document", "parent", "updated_by"]
    readonly_fields = ["key", "version"]


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    """History is evidence: it can be read here, never edited or deleted."""

    list_display = ["created_at", "document", "kind", "heading", "author", "agent_role", "model_version", "summary"]
    list_filter = ["kind", "agent_role", "created_at"]
    search_fields = ["heading", "content", "document__title", "author__username"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class SourceChunkInline(admin.TabularInline):
    model = SourceChunk
    extra = 0
    fields = ["index", "char_start", "char_end", "text"]
    readonly_fields = fields
    can_delete = False
    max_num = 0


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "kind", "size", "status", "uploaded_by", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["title", "original_name", "project__name"]
    raw_id_fields = ["project", "uploaded_by"]
    readonly_fields = ["size", "kind", "status", "error", "processed_at"]
    inlines = [SourceChunkInline]


@admin.register(SourceChunk)
class SourceChunkAdmin(admin.ModelAdmin):
    list_display = ["source", "index", "char_start", "char_end"]
    search_fields = ["text", "source__title"]
    raw_id_fields = ["source"]
