"""The training jobs in the admin: start one, watch its progress and loss curve, read its log,
cancel it."""

from __future__ import annotations

from pathlib import Path

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from webapp.jobs import training
from webapp.jobs.models import TrainingJob


def loss_curve_svg(losses: list[float], width: int = 640, height: int = 220) -> str:
    """The training loss per step as an SVG line chart (numbers only, so nothing to escape)."""
    if len(losses) < 2:
        return ""
    pad = 40
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    points = " ".join(f"{pad + i * (width - 2 * pad) / (len(losses) - 1):.1f},"
                      f"{height - pad - (loss - low) / span * (height - 2 * pad):.1f}" for i, loss in enumerate(losses))
    return (f'<svg class="loss-curve" width="{width}" height="{height}" role="img" aria-label="training loss by step">'
            f'<polyline points="{points}"/>'
            f'<text x="4" y="{pad}">{high:.3f}</text><text x="4" y="{height - pad}">{low:.3f}</text>'
            f'<text x="{pad}" y="{height - 8}">step 1</text>'
            f'<text x="{width - pad - 40}" y="{height - 8}">step {len(losses)}</text></svg>')


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "role", "base_model", "status", "progress_text", "created_at"]
    list_filter = ["status", "kind", "role"]
    search_fields = ["role", "error"]
    actions = ["cancel", "resume"]
    fields = ["kind", "role", "base_model", "options", "project", "since", "until", "heldout", "processes", "nodes",
              "after"]
    result_fields = ["status", "progress", "loss_curve", "per_rank", "metrics", "registered", "checkpoint",
                     "checkpoint_sha256", "resumed_from", "error", "command", "logs", "output_dir", "created_by",
                     "started_at", "finished_at"]

    def get_fields(self, request, obj=None):
        return self.fields + self.result_fields if obj else self.fields

    def get_readonly_fields(self, request, obj=None):
        return self.fields + self.result_fields if obj else []

    def save_model(self, request, obj, form, change) -> None:
        if change:
            return
        obj.created_by = request.user
        training.job_start(obj)
        self.message_user(request, f"Job {obj.pk} is queued on the training workers.")

    def changelist_view(self, request, extra_context=None):
        training.reap_stale()
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        training.reap_stale()
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="progress")
    def progress_text(self, obj: TrainingJob) -> str:
        return f"{obj.step}/{obj.total_steps}" if obj.total_steps else "—"

    @admin.display(description="progress")
    def progress(self, obj: TrainingJob) -> str:
        if not obj.total_steps:
            return "—"
        return format_html('<progress max="{}" value="{}"></progress> step {} of {}', obj.total_steps, obj.step,
                           obj.step, obj.total_steps)

    @admin.display(description="training loss")
    def loss_curve(self, obj: TrainingJob) -> str:
        losses = [float(x) for x in obj.losses or []]
        return mark_safe(loss_curve_svg(losses)) if len(losses) > 1 else "—"  # noqa: S308  (numbers only)

    @admin.display(description="per process")
    def per_rank(self, obj: TrainingJob) -> str:
        """Each rank's share of the weights and optimizer state, its tokens a second and peak memory."""
        ranks = (obj.metrics or {}).get("ranks") or {}
        memory, speed = ranks.get("memory", {}), ranks.get("speed", {})
        count = max((len(v) for part in (memory, speed) for v in part.values() if isinstance(v, list)), default=0)
        if not count:
            return "—"

        def cell(part: dict, key: str, rank: int, scale: float = 1.0) -> str:
            values = part.get(key) or []
            return f"{values[rank] / scale:,.1f}" if rank < len(values) else "—"

        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (rank, cell(memory, "param_bytes", rank, 2**20), cell(memory, "optimizer_bytes", rank, 2**20),
             cell(speed, "tokens_per_s", rank), cell(speed, "peak_rss_mb", rank)) for rank in range(count)))
        return format_html('<table class="per-rank"><tr><th>rank</th><th>weights MB</th><th>optimizer MB</th>'
                           "<th>tokens/s</th><th>peak memory MB</th></tr>{}</table> strategy: {}", rows,
                           str(memory.get("strategy") or speed.get("strategy") or "ddp"))

    @admin.display(description="registered as")
    def registered(self, obj: TrainingJob) -> str:
        target = obj.adapter or obj.produced_model
        if target is None:
            return "—"
        url = reverse(f"admin:registry_{target._meta.model_name}_change", args=[target.pk])
        return format_html('<a href="{}">{}</a> ({}; promotion gate: {}; activate it from its list)', url, target,
                           target.status, target.gate_summary())

    @admin.display(description="command")
    def command(self, obj: TrainingJob) -> str:
        if not obj.output_dir:
            return "—"
        return " ".join(training.recipe_argv(obj, Path(obj.output_dir)))

    @admin.display(description="log")
    def logs(self, obj: TrainingJob) -> str:
        text = training.job_log(obj)  # from the training machine's folder, or the models storage
        return format_html('<pre class="job-log">{}</pre>', text) if text else "—"

    @admin.action(description="Resume the selected stopped jobs from their stored checkpoints (as new jobs)")
    def resume(self, request, queryset) -> None:
        for job in queryset:
            try:
                again = training.job_resume(job, user=request.user)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.WARNING)
            else:
                self.message_user(request, f"Job {again.pk} resumes job {job.pk} on the training workers.")

    @admin.action(description="Cancel the selected jobs (they checkpoint and stop)")
    def cancel(self, request, queryset) -> None:
        for job in queryset:
            if training.job_cancel(job):
                self.message_user(request, f"Job {job.pk} is stopping.")
            else:
                self.message_user(request, f"Job {job.pk} had already ended.", messages.WARNING)
