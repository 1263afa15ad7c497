"""The registry decides which adapter version each role uses; activating or rolling back takes
effect on the next request to an engine that keeps running."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import GenerationRequest
from tests.support.factories import vouched
from webapp import llm
from webapp.redis import CancelFlags
from webapp.registry import services
from webapp.registry.models import AdapterVersion, VersionStatus


def _ask(engine, role, rid="q", max_new_tokens=8, cancel=None):
    request = GenerationRequest(id=rid, messages=[{"role": "user", "content": "Write about terns."}],
                                max_new_tokens=max_new_tokens)
    text, last = "", None
    for delta in engine.stream(llm.with_role_adapters([(role, request)]), cancel=cancel):
        text += delta.text
        last = delta if delta.finished else last
    return text, last


@pytest.fixture
def own_store(settings, tmp_path):
    """A models store of this test's own, so what it tampers with no other test sees."""
    settings.STORAGES = {**settings.STORAGES, "models": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "store")}}}
    return tmp_path / "store"


@pytest.fixture
def registered(db, tiny_model_dir, tiny_adapters, tmp_path, own_store):
    base = services.base_model_register(name="tiny", path=str(tiny_model_dir), activate=True)
    folders = {}
    for version, source in ((1, "writer"), (2, "reviewer")):  # two versions of the writer's adapter
        folders[version] = tmp_path / f"writer-v{version}"
        shutil.copytree(tiny_adapters[source], folders[version])
        services.adapter_register(role="writer", path=str(folders[version]), base_model=base)
    return base, folders


def test_activating_a_version_changes_the_next_request_without_restart(registered, tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32", base_model_name="tiny")
    base_text, _ = _ask(engine, "writer")  # nothing active yet: the base model
    call_command("activate_adapter", "writer", "1", "--override", "a test's random adapter")
    v1_text, last = _ask(engine, "writer")
    call_command("activate_adapter", "writer", "2", "--override", "a test's random adapter")
    v2_text, _ = _ask(engine, "writer")
    assert len({base_text, v1_text, v2_text}) == 3
    assert last.finish_reason == "length"
    assert engine.loaded_adapters() == ["writer@1", "writer@2"]
    call_command("activate_adapter", "writer", "--rollback")
    assert _ask(engine, "writer")[0] == v1_text
    assert AdapterVersion.objects.get(status=VersionStatus.ACTIVE).version == 1
    call_command("activate_adapter", "writer", "--none")
    assert _ask(engine, "writer")[0] == base_text


def test_only_one_version_per_role_is_active(registered):
    v1, v2 = AdapterVersion.objects.order_by("version")
    services.adapter_activate(adapter=v1, override=vouched())
    services.adapter_activate(adapter=v2, override=vouched())
    statuses = dict(AdapterVersion.objects.values_list("version", "status"))
    assert statuses == {1: "retired", 2: "active"}


def test_an_adapter_changed_on_disk_fails_its_role_only(registered, tiny_model_dir):
    _, folders = registered
    adapter = services.adapter_activate(adapter=AdapterVersion.objects.get(version=1), override=vouched())
    (folders[1] / "adapter_model.safetensors").write_bytes(b"tampered")  # the folder it came from: no matter
    engine = TransformersEngine(tiny_model_dir, dtype="float32", base_model_name="tiny")
    assert _ask(engine, "writer")[1].finish_reason == "length"
    (Path(services.local_path(adapter)) / "adapter_model.safetensors").write_bytes(b"tampered")  # the stored copy
    engine = TransformersEngine(tiny_model_dir, dtype="float32", base_model_name="tiny")  # one that never loaded it
    _, failed = _ask(engine, "writer")
    assert failed.finish_reason == "error" and "checksum mismatch" in failed.error
    text, fine = _ask(engine, "reviewer")  # no adapter: the base model
    assert fine.finish_reason == "length" and text


def test_an_adapter_for_another_base_model_is_refused(registered, tiny_model_dir):
    services.adapter_activate(adapter=AdapterVersion.objects.get(version=1), override=vouched())
    engine = TransformersEngine(tiny_model_dir, dtype="float32", base_model_name="another-base")
    _, failed = _ask(engine, "writer")
    assert "was trained on 'tiny'" in failed.error


def test_register_commands_check_folders(db, tiny_model_dir, tmp_path):
    with pytest.raises(CommandError, match="no such model folder"):
        call_command("register_model", "ghost", str(tmp_path / "ghost"))
    call_command("register_model", "tiny", str(tiny_model_dir))
    with pytest.raises(CommandError, match="adapter_config.json is missing"):
        call_command("register_adapter", "writer", str(tmp_path), "--base", "tiny")
    with pytest.raises(CommandError, match="No base model named"):
        call_command("register_adapter", "writer", str(tmp_path), "--base", "nope")
    with pytest.raises(CommandError, match="No earlier active version"):
        call_command("activate_adapter", "writer", "--rollback")


def test_a_redis_cancel_flag_stops_a_running_request(db, tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    flags = CancelFlags()
    rid = f"cancel-{uuid.uuid4().hex}"
    deltas, flagged = [], 0.0
    for delta in engine.stream([GenerationRequest(id=rid, prompt="Terns", max_new_tokens=2000)], cancel=flags):
        deltas.append(delta)
        if len(deltas) == 3:
            flags.set(rid)  # as the web process would, through Redis
            flagged = time.monotonic()
    assert deltas[-1].finish_reason == "cancelled" and deltas[-1].completion_tokens < 2000
    # The flags are read every 0.1 s by the caller; the core stops the row at its next step.
    assert time.monotonic() - flagged < 1.0


def test_admin_actions_activate_and_roll_back(client, registered):
    from django.urls import reverse

    from tests.support.factories import PASSWORD, make_user

    make_user("root", is_staff=True, is_superuser=True)
    client.login(username="root", password=PASSWORD)
    url = reverse("admin:registry_adapterversion_changelist")
    AdapterVersion.objects.update(gate={"passed": True})  # as the promotion gate left them
    v1, v2 = AdapterVersion.objects.order_by("version")
    for version in (v1, v2):
        client.post(url, {"action": "activate", "_selected_action": [version.pk]})
    assert AdapterVersion.objects.get(status=VersionStatus.ACTIVE) == v2
    client.post(url, {"action": "roll_back", "_selected_action": [v2.pk]})
    assert AdapterVersion.objects.get(status=VersionStatus.ACTIVE) == v1
    assert client.get(url).status_code == 200


def test_an_adapter_trained_on_another_base_model_is_not_registered(db, tiny_model_dir, tiny_adapters, tmp_path):
    """training/lora.py records the base model's checksum beside the adapter; registering it
    on a base model with another checksum fails (by hand as by a training job)."""
    import json

    services.base_model_register(name="tiny", path=str(tiny_model_dir))
    folder = tmp_path / "adapter"
    shutil.copytree(tiny_adapters["writer"], folder)
    (folder / "scriptorium.json").write_text(json.dumps({"role": "writer", "base_sha256": "f" * 64}))
    with pytest.raises(CommandError, match="checksum differs from tiny's registered one"):
        call_command("register_adapter", "writer", str(folder), "--base", "tiny")
    assert not AdapterVersion.objects.exists()
