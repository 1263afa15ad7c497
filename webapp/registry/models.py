"""The model registry: base models and LoRA adapter versions, and which version each role uses."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class VersionStatus(models.TextChoices):
    STAGED = "staged", "Staged"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class BaseModel(models.Model):
    """A local causal-LM folder that engines can serve. The active one is what workers load."""

    name = models.SlugField(max_length=100, unique=True)
    path = models.CharField(max_length=500, help_text="A local Hugging Face model folder.")
    sha256 = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=VersionStatus.choices, default=VersionStatus.STAGED)
    notes = models.TextField(blank=True)
    roles = models.CharField(max_length=300, blank=True,
                             help_text="Agent roles this model serves instead of the active base model, "
                                       "comma-separated (e.g. a distilled student for the reviewer).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["status"], condition=Q(status="active"),
                                               name="one_active_base_model")]

    def __str__(self) -> str:
        return self.name

    def role_list(self) -> list[str]:
        return [r.strip() for r in self.roles.split(",") if r.strip()]

    def clean(self) -> None:
        from webapp.registry.services import check_role_assignment

        check_role_assignment(self)


class AdapterVersion(models.Model):
    """A LoRA adapter for one agent role, trained on one base model."""

    role = models.SlugField(max_length=50)
    version = models.PositiveIntegerField()
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="adapters")
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=VersionStatus.choices, default=VersionStatus.STAGED)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["role", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["role", "version"], name="one_number_per_role_version"),
            models.UniqueConstraint(fields=["role"], condition=Q(status="active"), name="one_active_version_per_role"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f"{self.role}@{self.version}"


class JobKind(models.TextChoices):
    LORA = "lora", "LoRA adapter for a role"
    DISTILL = "distill", "Distilled student (fewer layers)"
    PRUNE = "prune", "Structured pruning"
    QUANTIZE = "quantize", "int8 quantization"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    CANCELLING = "cancelling", "Cancelling"
    DONE = "done", "Done (output registered, staged)"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class TrainingJob(models.Model):
    """One recipe from training/ run on the `training` queue. Its output is registered as a
    staged adapter or base model only when the recipe finished and its output checked out."""

    kind = models.CharField(max_length=10, choices=JobKind.choices)
    role = models.SlugField(max_length=50, blank=True, help_text="The agent role a LoRA adapter is for (writer).")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="training_jobs",
                                   help_text="The model trained on (LoRA), distilled, pruned or quantized.")
    options = models.JSONField(default=dict, blank=True,
                               help_text='Recipe options, e.g. {"steps": 50, "lr": 0.0002, "rank": 16}.')
    project = models.ForeignKey("projects.Project", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+", help_text="Only this project's accepted sections (default: all).")
    since = models.DateField(null=True, blank=True, help_text="Only sections finished on or after this day.")
    until = models.DateField(null=True, blank=True, help_text="Only sections finished on or before this day.")
    heldout = models.FloatField(default=0.2, help_text="Share of documents held out for evaluation.")
    processes = models.PositiveSmallIntegerField(default=1, help_text="Processes under torchrun (one per GPU).")
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    losses = models.JSONField(default=list, blank=True, editable=False)
    metrics = models.JSONField(default=dict, blank=True, editable=False)
    output_dir = models.CharField(max_length=500, blank=True, editable=False)
    checkpoint = models.CharField(max_length=500, blank=True, editable=False,
                                  help_text="The newest checkpoint a stopped job left.")
    error = models.TextField(blank=True, editable=False)
    adapter = models.ForeignKey(AdapterVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                editable=False)
    produced_model = models.ForeignKey(BaseModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                       editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} job {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

    def clean(self) -> None:
        from webapp.registry.training import check_job

        check_job(self)
