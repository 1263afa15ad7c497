"""Registering, activating and rolling back models and adapters, and resolving what a role uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents.llm.files import (
    ModelFolderError,
    check_adapter_folder,
    check_adapter_weights,
    check_model_folder,
    folder_sha256,
)
from agents.llm.types import AdapterSpec
from training import layout
from webapp.registry import lora_servers, store
from webapp.registry.models import AdapterVersion, BaseModel, VersionStatus

# The promotion gate's task (webapp/jobs/gate.py, on the training queue), by name: the registry
# queues it from the admin console and never imports what runs it.
GATE_TASK = "training.gate_version"


class RegistryError(Exception):
    """A registry change that cannot be made; the message says why."""


@dataclass(frozen=True)
class Override:
    """A staff member activating a version the promotion gate did not pass, and why."""
    by: str
    why: str

    def record(self, version: BaseModel | AdapterVersion) -> dict:
        return {"by": self.by, "why": self.why, "at": timezone.now().isoformat(), "gate": version.gate_summary()}


def override_arguments(parser) -> None:
    """--override WHY and --by NAME, for the commands that activate a version."""
    parser.add_argument("--override", metavar="WHY", default="",
                        help="activate it although the promotion gate has not passed it, saying why (recorded)")
    parser.add_argument("--by", default="", help="who overrides (default: this machine's user name)")


def override_from(options: dict) -> Override | None:
    import getpass

    why = options.get("override", "").strip()
    return Override(by=options.get("by") or getpass.getuser(), why=why) if why else None


def _gated(version: BaseModel | AdapterVersion, override: Override | None) -> None:
    """A version is activated when the promotion gate passed it, or with a staff override (kept
    with the version: who, why, when, and what the gate said). One let through before (overridden,
    or active before the gate existed) comes back without a new one."""
    if version.gate_passed or version.override or getattr(version, "activated_at", None):
        return
    if override is None or not override.why.strip() or not override.by:
        raise RegistryError(f"{version} has not passed the promotion gate ({version.gate_summary()}); "
                            "measure it (manage.py gate) or activate it with an override that says why.")
    version.override = override.record(version)
    version.save(update_fields=["override"])


@transaction.atomic
def base_model_register(*, name: str, path: str, activate: bool = False, notes: str = "",
                        override: Override | None = None) -> BaseModel:
    try:
        folder = check_model_folder(path)
    except ModelFolderError as error:
        raise RegistryError(str(error)) from error
    sha256 = folder_sha256(folder)
    model, _ = BaseModel.objects.update_or_create(
        name=name, defaults={"path": str(folder.resolve()), "sha256": sha256, "notes": notes,
                             "stored": _publish(folder, sha256)})
    if activate:
        base_model_activate(model=model, override=override)
    return model


@transaction.atomic
def base_model_activate(*, model: BaseModel, override: Override | None = None) -> BaseModel:
    """Serve this base model (workers load it on their next start). The first one needs no gate:
    there is nothing to compare it with."""
    replaced = BaseModel.objects.select_for_update().active().exclude(pk=model.pk)
    if replaced.exists():
        _gated(model, override)
    replaced.update(status=VersionStatus.RETIRED)
    model.status = VersionStatus.ACTIVE
    model.save(update_fields=["status"])
    return model


@transaction.atomic
def adapter_register(*, role: str, path: str, base_model: BaseModel, metrics: dict | None = None,
                     notes: str = "", activate: bool = False, override: Override | None = None) -> AdapterVersion:
    try:
        folder = check_adapter_folder(path)
        check_adapter_weights(folder, _base_folder(base_model))
    except ModelFolderError as error:
        raise RegistryError(str(error)) from error
    trained_on = _trained_on(folder)
    if trained_on and base_model.sha256 and trained_on != base_model.sha256:
        raise RegistryError(f"{folder}: the adapter was trained on a model whose checksum differs from "
                            f"{base_model.name}'s registered one ({trained_on[:12]}… vs {base_model.sha256[:12]}…)")
    sha256 = folder_sha256(folder)
    stored = _publish(folder, sha256)
    latest = AdapterVersion.objects.select_for_update().filter(role=role).aggregate(m=Max("version"))["m"]
    adapter = AdapterVersion.objects.create(
        role=role, version=(latest or 0) + 1, base_model=base_model, path=str(Path(folder).resolve()),
        sha256=sha256, stored=stored, metrics=metrics or {}, notes=notes)
    if activate:
        adapter_activate(adapter=adapter, override=override)
    return adapter


def _base_folder(base_model: BaseModel) -> str | None:
    """The base model's folder here, to check an adapter against; None where it cannot be had."""
    try:
        return local_path(base_model)
    except store.FetchError:
        return None


def _publish(folder: Path, sha256: str) -> str:
    """Copy a version's files into the models storage, where every machine fetches them from."""
    try:
        return store.publish(folder, sha256)
    except Exception as error:  # noqa: BLE001  (a store that cannot be written: nothing is registered)
        raise RegistryError(f"{folder}: could not be copied to the models storage ({type(error).__name__}: "
                            f"{error})") from error


def local_path(version: BaseModel | AdapterVersion) -> str:
    """This machine's folder of a registered version: fetched from the models storage by its
    checksum (once, verified), or the folder it was registered from where it was never stored.
    Raises store.FetchError with the reason when it cannot be had."""
    if not version.stored:
        return version.path
    return str(store.local_folder(version.sha256, version.stored))


def adapter_spec(adapter: AdapterVersion, fetch: bool = True) -> AdapterSpec:
    """What the engine needs to serve an adapter version. A version that cannot be fetched to
    this machine carries the reason, and fails the requests that use it (and only those)."""
    try:
        path, problem = (local_path(adapter) if fetch else adapter.path), ""
    except store.FetchError as error:
        path, problem = adapter.path, f"{adapter.name}: {error}"
    return AdapterSpec(name=adapter.name, path=path, sha256=adapter.sha256, base_model=adapter.base_model.name,
                       problem=problem)


def _trained_on(folder: Path) -> str:
    """The base model checksum that training/lora.py records beside an adapter, if any."""
    meta = Path(folder) / layout.ADAPTER_META
    try:
        return json.loads(meta.read_text()).get("base_sha256", "") if meta.is_file() else ""
    except (OSError, ValueError):
        return ""


@transaction.atomic
def adapter_activate(*, adapter: AdapterVersion, override: Override | None = None) -> AdapterVersion:
    """Make this the version its role uses, if the promotion gate passed it or staff override it;
    the one it replaces is retired (and can come back)."""
    _gated(adapter, override)
    return _activate(adapter)


def _activate(adapter: AdapterVersion) -> AdapterVersion:
    assigned = model_for_role(adapter.role)
    if assigned is not None and assigned.pk != adapter.base_model_id:
        raise RegistryError(f"{adapter.role!r} is served by {assigned.name}, but {adapter.name} was trained on "
                            f"{adapter.base_model.name}.")
    others = AdapterVersion.objects.select_for_update().active().filter(role=adapter.role).exclude(
        pk=adapter.pk)
    replaced = others.first()
    others.update(status=VersionStatus.RETIRED)
    adapter.status, adapter.activated_at = VersionStatus.ACTIVE, timezone.now()
    adapter.save(update_fields=["status", "activated_at"])
    _switch_on_servers(load=adapter, unload=replaced)
    return adapter


def activate(version: BaseModel | AdapterVersion, override: Override | None = None) -> BaseModel | AdapterVersion:
    """Activate a base model or an adapter version (what the admin console and the gate call)."""
    if isinstance(version, BaseModel):
        return base_model_activate(model=version, override=override)
    return adapter_activate(adapter=version, override=override)


def _switch_on_servers(*, load: AdapterVersion | None, unload: AdapterVersion | None) -> None:
    """Model servers that load adapters at run time follow (inside the caller's transaction: a
    server that refuses undoes the change)."""
    try:
        lora_servers.switch(load=load, unload=unload)
    except lora_servers.LoraServerError as error:
        raise RegistryError(f"The model servers did not follow, so nothing changed: {error}") from error


@transaction.atomic
def adapter_rollback(*, role: str) -> AdapterVersion:
    """Go back to the version that was active before the current one."""
    current = AdapterVersion.objects.select_for_update().active().filter(role=role).first()
    earlier = AdapterVersion.objects.filter(role=role, status=VersionStatus.RETIRED, activated_at__isnull=False)
    if current is not None:
        earlier = earlier.filter(activated_at__lt=current.activated_at)
    previous = earlier.order_by("-activated_at").first()
    if previous is None:
        raise RegistryError(f"No earlier active version of {role!r} to roll back to.")
    return _activate(previous)  # it was let through once: going back needs no new gate


@transaction.atomic
def adapter_deactivate(*, role: str) -> None:
    """The role goes back to the plain base model."""
    current = AdapterVersion.objects.select_for_update().active().filter(role=role).first()
    AdapterVersion.objects.active().filter(role=role).update(status=VersionStatus.RETIRED)
    _switch_on_servers(load=None, unload=current)


def resolve_adapter(role: str) -> AdapterSpec | None:
    """The adapter a role uses right now, or None for the base model. Read on every request, so an
    activation takes effect on the next request without restarting anything."""
    adapter = AdapterVersion.objects.select_related("base_model").active().filter(role=role).first()
    if adapter is None:
        return None
    # A process that forwards to model servers sends the adapter's name; only one that serves
    # it needs the files.
    return adapter_spec(adapter, fetch=settings.SCRIPTORIUM_LLM_BACKEND == "transformers")


def migrate_if_fresh() -> None:
    """For commands and scripts that load models outside `make run` (evaluate, bench/): a fresh
    data folder's database has no tables yet, so they are created first, as `make run` does. A
    database that has them is left alone (its migrations are the web process's to run)."""
    from django.core.management import call_command
    from django.db import connection

    if BaseModel._meta.db_table not in connection.introspection.table_names():
        call_command("migrate", interactive=False, verbosity=0)


def active_base_model() -> BaseModel | None:
    return BaseModel.objects.active().first()


def model_for_role(role: str) -> BaseModel | None:
    """The model assigned to serve this role instead of the active base model, if any."""
    for model in BaseModel.objects.exclude(roles="").exclude(status=VersionStatus.RETIRED):
        if role in model.role_list():
            return model
    return None


def base_model_assign_roles(*, model: BaseModel, roles: list[str]) -> BaseModel:
    model.roles = ", ".join(roles)
    model.full_clean()
    model.save(update_fields=["roles"])
    return model
