"""Training jobs: a recipe from training/ run on the `training` queue, above the registry it
registers its output in."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from webapp.jobs import recipes, training_data
from webapp.registry.models import AdapterVersion, BaseModel


class JobKind(models.TextChoices):
    LORA = "lora", "LoRA adapter for a role"
    DISTILL = "distill", "Distilled student (fewer layers)"
    PRUNE = "prune", "Structured pruning"
    QUANTIZE = "quantize", "int8 quantization"
    SELF_TRAIN = "self_train", "Writer adapter trained on its own best sections"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    CANCELLING = "cancelling", "Cancelling"
    DONE = "done", "Done (output registered, staged)"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class AfterTraining(models.TextChoices):
    STAGE = "stage", "Register it staged"
    MEASURE = "measure", "Register it staged and measure it with the promotion gate"
    PROMOTE = "promote", "Measure it with the promotion gate, and activate it if it passes"


class TrainingJob(models.Model):
    """One recipe from training/ run on the `training` queue. Its output is registered as a
    staged adapter or base model only when the recipe finished and its output checked out."""

    kind = models.CharField(max_length=12, choices=JobKind.choices)
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
    nodes = models.PositiveSmallIntegerField(
        default=1, help_text="Machines the recipe runs on at once, `processes` on each (torchrun; needs this many "
                             "training workers free).")
    after = models.CharField(
        max_length=8, choices=AfterTraining.choices, default=AfterTraining.MEASURE,
        help_text="The gate writes held-out briefs with the output and with the version it would replace "
                  "(minutes on a CPU); a version that has not passed it is activated only with an override.")
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    losses = models.JSONField(default=list, blank=True, editable=False)
    metrics = models.JSONField(default=dict, blank=True, editable=False)
    output_dir = models.CharField(max_length=500, blank=True, editable=False)
    checkpoint = models.CharField(max_length=500, blank=True, editable=False,
                                  help_text="The newest checkpoint a stopped job left.")
    checkpoint_sha256 = models.CharField(max_length=64, blank=True, editable=False,
                                         help_text="The newest checkpoint's checksum in the models storage, "
                                                   "from which any training worker can resume the job.")
    resumed_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                     editable=False, help_text="The stopped job whose checkpoint this one continues.")
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
        db_table = "registry_trainingjob"  # the table it had while jobs lived in the registry

    def __str__(self) -> str:
        return f"{self.get_kind_display()} job {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

    def clean(self) -> None:
        """What the admin form checks before a job is queued."""
        errors = {}
        problem = recipes.option_errors(self.kind, self.options)
        if problem:
            errors["options"] = problem
        if self.kind == JobKind.LORA and self.role not in training_data.ROLES:
            errors["role"] = f"LoRA jobs train a role with recorded prompts: {', '.join(training_data.ROLES)}."
        if not 0 < self.heldout < 1 and self.kind == JobKind.LORA:
            errors["heldout"] = "The held-out share must be between 0 and 1."
        if self.since and self.until and self.since > self.until:
            errors["until"] = "This is before the start date."
        if self.processes < 1:
            errors["processes"] = "At least one process."
        if self.nodes < 1:
            errors["nodes"] = "At least one machine."
        if self.kind == JobKind.SELF_TRAIN:
            self.role = "writer"  # what it trains: the section writer's adapter
        if errors:
            raise ValidationError(errors)

