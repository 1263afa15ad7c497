"""The model registry: base models and LoRA adapter versions, and which version each role uses."""

from __future__ import annotations

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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["status"], condition=Q(status="active"),
                                               name="one_active_base_model")]

    def __str__(self) -> str:
        return self.name


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
