"""Large models run on vLLM, which loads role adapters at run time. `serve_llm` implements the same
endpoints (/v1/load_lora_adapter, /v1/unload_lora_adapter), so the whole path runs here over
HTTP: activating a version loads it on every model server, rolling back unloads it, and the
role's requests name the loaded adapter."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import AdapterSpec, GenerationRequest
from tests.support.factories import vouched
from tests.support.processes import database_url_for_subprocess, free_port, start_serve_llm
from tests.support.streams import collect
from tests.support.tiny_models import build_adapter
from webapp import llm
from webapp.registry import services, store
from webapp.registry.models import AdapterVersion, VersionStatus


@pytest.fixture
def model_server(transactional_db, tiny_model_dir, tmp_path):
    """serve_llm on the tiny model as the registry's active base model, with no adapter active."""
    services.base_model_register(name="tiny", path=str(tiny_model_dir), activate=True)
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(), SCRIPTORIUM_LLM_DTYPE="float32",
               SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR), SCRIPTORIUM_LLM_DEVICE="cpu",
               SCRIPTORIUM_LORA_SERVER_DIR=str(tmp_path / "server-adapters"))  # the server's own folder
    env.pop("SCRIPTORIUM_MODEL", None)
    url, process = start_serve_llm(env, tmp_path / "serve.log")
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture
def through_servers(model_server, settings, tmp_path, tiny_adapters):
    """This process as a worker of the `openai` backend, with the registry driving the server."""
    settings.SCRIPTORIUM_LLM_BACKEND = "openai"
    settings.OPENAI_BASE_URL, settings.OPENAI_MODEL = model_server, "tiny"
    settings.SCRIPTORIUM_LORA_SERVERS = [model_server]
    settings.SCRIPTORIUM_LORA_SERVER_DIR = str(tmp_path / "server-adapters")  # nothing there: the server fetches
    llm._openai_engine.cache_clear()
    base = services.active_base_model()
    for source in ("writer", "reviewer"):  # two versions of the writer's adapter
        services.adapter_register(role="writer", path=str(tiny_adapters[source]), base_model=base)
    yield model_server
    llm._openai_engine.cache_clear()


def _loaded(server: str) -> list[str]:
    models = json.load(urllib.request.urlopen(server + "/models"))["data"]
    return sorted(m["id"] for m in models if m.get("parent") == "tiny")


def _ask() -> str:
    request = GenerationRequest(id="q", messages=[{"role": "user", "content": "Write about terns."}],
                                max_new_tokens=10)
    texts, ends = collect(llm.get_engine("writer"), llm.with_role_adapters([("writer", request)]))
    assert ends["q"].finish_reason == "length", ends["q"].error
    return texts["q"]


def _expected(tiny_model_dir, tiny_adapters, source: str | None) -> str:
    engine = TransformersEngine(tiny_model_dir, dtype="float32", base_model_name="tiny")
    adapter = AdapterSpec(source, str(tiny_adapters[source])) if source else None
    texts, _ = collect(engine, [GenerationRequest(id="q", messages=[{"role": "user", "content": "Write about terns."}],
                                                  max_new_tokens=10, adapter=adapter)])
    engine.close()
    return texts["q"]


def test_activation_and_rollback_load_and_unload_adapters_on_the_servers(through_servers, tiny_model_dir,
                                                                          tiny_adapters, settings):
    server = through_servers
    v1, v2 = AdapterVersion.objects.order_by("version")
    base_text = _ask()
    assert _loaded(server) == [] and base_text == _expected(tiny_model_dir, tiny_adapters, None)

    services.adapter_activate(adapter=v1, override=vouched())
    assert _loaded(server) == ["writer@1"]
    v1_text = _ask()  # the request names writer@1, loaded by the activation
    assert v1_text == _expected(tiny_model_dir, tiny_adapters, "writer") != base_text
    # The server fetched the version by its checksum into its adapter folder, and verified it.
    fetched = Path(settings.SCRIPTORIUM_LORA_SERVER_DIR)
    assert [p.name for p in fetched.iterdir() if not p.name.startswith(".")] == [v1.sha256]

    services.adapter_activate(adapter=v2, override=vouched())
    assert _loaded(server) == ["writer@2"]  # the version it replaced is unloaded
    assert _ask() == _expected(tiny_model_dir, tiny_adapters, "reviewer")

    services.adapter_rollback(role="writer")
    assert _loaded(server) == ["writer@1"]
    assert _ask() == v1_text

    services.adapter_deactivate(role="writer")
    assert _loaded(server) == [] and _ask() == base_text


def test_a_server_that_cannot_load_the_version_leaves_the_registry_as_it_was(through_servers, settings, tmp_path):
    v1, v2 = AdapterVersion.objects.order_by("version")
    services.adapter_activate(adapter=v1, override=vouched())
    settings.SCRIPTORIUM_LORA_SERVERS = [through_servers, f"http://127.0.0.1:{free_port()}/v1"]  # one is down
    with pytest.raises(services.RegistryError, match="did not follow, so nothing changed"):
        services.adapter_activate(adapter=v2, override=vouched())
    assert AdapterVersion.objects.get(status=VersionStatus.ACTIVE) == v1
    # A version whose files left the store: the server cannot fetch it, so it is not activated.
    settings.SCRIPTORIUM_LORA_SERVERS = [through_servers]
    folder = build_adapter(Path(services.active_base_model().path), tmp_path / "v3", seed=99)
    v3 = services.adapter_register(role="writer", path=str(folder), base_model=services.active_base_model())
    store._storage().delete(f"manifests/{v3.sha256}.json")
    with pytest.raises(services.RegistryError, match="not in the store"):
        services.adapter_activate(adapter=v3, override=vouched())
    assert AdapterVersion.objects.get(status=VersionStatus.ACTIVE) == v1
    assert _loaded(through_servers) == ["writer@1", "writer@2"]  # the one server that loaded writer@2 keeps it


def test_fetch_adapters_fills_a_server_folder_and_reloads_what_a_restarted_server_forgot(through_servers, settings,
                                                                                        tmp_path):
    from django.core.management import call_command

    v1, v2 = AdapterVersion.objects.order_by("version")
    services.adapter_activate(adapter=v1, override=vouched())
    into = tmp_path / "beside-vllm"
    call_command("fetch_adapters", "--into", str(into))
    assert sorted(p.name for p in into.iterdir() if not p.name.startswith(".")) == sorted([v1.sha256, v2.sha256])
    request = urllib.request.Request(through_servers + "/unload_lora_adapter", method="POST",
                                     data=json.dumps({"lora_name": "writer@1"}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request)  # as a restarted server would have: nothing loaded
    assert _loaded(through_servers) == []
    call_command("fetch_adapters", "--into", str(into), "--load")
    assert _loaded(through_servers) == ["writer@1"]


def _post(server: str, endpoint: str, payload: dict) -> tuple[int, str]:
    request = urllib.request.Request(f"{server}/{endpoint}", method="POST", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _placed(source: Path, root: Path) -> Path:
    """A copy of an adapter folder in a server's adapter folder, under its checksum."""
    import shutil

    from agents.llm.files import folder_sha256

    target = root / folder_sha256(source)
    shutil.copytree(source, target)
    return target


def test_a_load_reads_only_adapter_folders_the_server_owns(through_servers, settings, tmp_path, tiny_adapters):
    """Issue 26: the loader checked that files existed, nothing more."""
    import shutil

    from agents.llm.files import folder_sha256

    root = Path(settings.SCRIPTORIUM_LORA_SERVER_DIR)
    root.mkdir(parents=True, exist_ok=True)
    sha = folder_sha256(tiny_adapters["writer"])
    elsewhere = tmp_path / "elsewhere" / sha
    shutil.copytree(tiny_adapters["writer"], elsewhere)
    cases = {"outside its folder": str(elsewhere), "a path that only ends in a checksum": f"/tmp/made-up/{'a' * 64}"}
    lying = root / ("b" * 64)  # named after a checksum, holding other files
    shutil.copytree(tiny_adapters["reviewer"], lying)
    cases["other files than its name says"] = str(lying)
    linked = root / ("c" * 64)
    linked.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (linked / name).symlink_to(tiny_adapters["writer"] / name)
    cases["links out of the folder"] = str(linked)
    other_base = tmp_path / "other-base-adapter"
    from tests.support.tiny_models import build_tiny_model

    other_model = build_tiny_model(tmp_path / "other-model", hidden=48)
    other = _placed(build_adapter(other_model, other_base, seed=5), root)
    cases["an adapter for another base model"] = str(other)
    for why, path in cases.items():
        status, answer = _post(through_servers, "load_lora_adapter", {"lora_name": "probe", "lora_path": path})
        assert status == 400, (why, answer)
    assert not Path("/tmp/made-up").exists()
    assert _loaded(through_servers) == []


def test_a_name_loaded_again_from_other_files_serves_those_files(through_servers, settings, tiny_model_dir,
                                                                  tiny_adapters):
    """Issue 26: after an unload, loading the same name from another folder made every request
    for it fail (the engine kept the old weights under the name); and activation took a server's
    "already loaded" for success, so a name loaded earlier from other files stayed served."""
    root = Path(settings.SCRIPTORIUM_LORA_SERVER_DIR)
    root.mkdir(parents=True, exist_ok=True)
    writer, reviewer = _placed(tiny_adapters["writer"], root), _placed(tiny_adapters["reviewer"], root)
    v1 = AdapterVersion.objects.order_by("version").first()  # the writer's files
    assert _post(through_servers, "load_lora_adapter", {"lora_name": v1.name, "lora_path": str(reviewer)})[0] == 200
    services.adapter_activate(adapter=v1, override=vouched())  # the server had writer@1 from the reviewer's files
    assert _ask() == _expected(tiny_model_dir, tiny_adapters, "writer")
    _post(through_servers, "unload_lora_adapter", {"lora_name": v1.name})
    assert _post(through_servers, "load_lora_adapter", {"lora_name": v1.name, "lora_path": str(reviewer)})[0] == 200
    assert _ask() == _expected(tiny_model_dir, tiny_adapters, "reviewer")  # the files loaded now
    assert writer.is_dir()


def test_fetch_adapters_replaces_a_changed_or_linked_copy_and_reports_a_bad_manifest(through_servers, settings,
                                                                                   tmp_path, capsys):
    """Issue 26: a changed file in <dir>/<sha256>, or a link at it, was kept and served without
    a word; a manifest of the wrong shape raised out of the command and ended --watch."""
    from django.core.management import call_command

    from agents.llm.files import folder_sha256

    v1, v2 = AdapterVersion.objects.order_by("version")
    into = tmp_path / "beside-vllm"
    call_command("fetch_adapters", "--into", str(into))
    weights = into / v1.sha256 / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # changed on disk
    (into / v2.sha256).rename(tmp_path / "moved")
    (into / v2.sha256).symlink_to("/etc")  # a link where the version should be
    capsys.readouterr()
    call_command("fetch_adapters", "--into", str(into))
    said = capsys.readouterr().out
    assert said.count("replaced a copy that was not the registered version") == 2
    for version in (v1, v2):
        assert not (into / version.sha256).is_symlink() and folder_sha256(into / version.sha256) == version.sha256
    import shutil

    from django.core.files.base import ContentFile

    manifest = store._manifest(v1.stored)
    store._storage().delete(manifest)
    store._storage().save(manifest, ContentFile(b'["not", "a", "manifest"]'))

    shutil.rmtree(into / v1.sha256)
    call_command("fetch_adapters", "--into", str(into))  # reports v1's failure, does not raise
    out = capsys.readouterr()
    assert "manifest is not a list of its files" in out.err and not (into / v1.sha256).exists()
