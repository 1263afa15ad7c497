"""The model registry: base models and LoRA adapter versions, and which version each role uses."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class VersionStatus(models.TextChoices):
    STAGED = "staged", "Staged"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class Gated(models.Model):
    """What the promotion gate found (webapp/jobs/gate.py), and a staff override of it."""

    gate = models.JSONField(default=dict, blank=True, editable=False,
                            help_text="The promotion gate's comparison with the version it would replace.")
    override = models.JSONField(default=dict, blank=True, editable=False,
                                help_text="Who activated it without a passed gate, and why.")

    class Meta:
        abstract = True

    @property
    def gate_passed(self) -> bool:
        return bool(self.gate.get("passed"))

    def gate_summary(self) -> str:
        if not self.gate:
            return "not measured"
        if self.gate_passed:
            return "passed"
        return "failed: " + "; ".join(self.gate.get("reasons") or [self.gate.get("error", "")])


class VersionQuerySet(models.QuerySet):
    def active(self) -> VersionQuerySet:
        return self.filter(status=VersionStatus.ACTIVE)


class BaseModel(Gated):
    """A local causal-LM folder that engines can serve. The active one is what workers load."""

    name = models.SlugField(max_length=100, unique=True)
    path = models.CharField(max_length=500, help_text="The folder it was registered from, on the machine that did.")
    sha256 = models.CharField(max_length=64, blank=True)
    stored = models.CharField(max_length=300, blank=True, editable=False,
                              help_text="Its key in the models storage; every machine fetches it from there.")
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=VersionStatus.choices, default=VersionStatus.STAGED)
    notes = models.TextField(blank=True)
    roles = models.CharField(max_length=300, blank=True,
                             help_text="Agent roles this model serves instead of the active base model, "
                                       "comma-separated (e.g. a distilled student for the reviewer).")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = VersionQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["status"], condition=Q(status="active"),
                                               name="one_active_base_model")]

    def __str__(self) -> str:
        return self.name

    def role_list(self) -> list[str]:
        return [r.strip() for r in self.roles.split(",") if r.strip()]

    def clean(self) -> None:
        """A role is served by one model at most, and never by one its active adapter was not
        trained on."""
        for role in self.role_list():
            other = BaseModel.objects.exclude(pk=self.pk).filter(roles__contains=role).first()
            if other is not None and role in other.role_list():
                raise ValidationError({"roles": f"{role!r} is already served by {other.name}."})
            adapter = AdapterVersion.objects.active().filter(role=role).first()
            if adapter is not None and adapter.base_model_id != self.pk:
                raise ValidationError({"roles": f"{role!r} uses {adapter.name}, trained on {adapter.base_model.name}; "
                                                f"deactivate it (or train one on {self.name}) first."})


class AdapterVersion(Gated):
    """A LoRA adapter for one agent role, trained on one base model."""

    role = models.SlugField(max_length=50)
    version = models.PositiveIntegerField()
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="adapters")
    path = models.CharField(max_length=500, help_text="The folder it was registered from, on the machine that did.")
    sha256 = models.CharField(max_length=64)
    stored = models.CharField(max_length=300, blank=True, editable=False,
                              help_text="Its key in the models storage; every machine fetches it from there.")
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=VersionStatus.choices, default=VersionStatus.STAGED)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    objects = VersionQuerySet.as_manager()

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
