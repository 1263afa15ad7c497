"""Files travel through object storage: model and adapter versions by their checksum (stored at
registration, downloaded into a machine's cache on first use, verified before use), uploaded
sources through Django's storage API. Against a real S3-compatible server (moto's)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.llm.files import folder_sha256
from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import GenerationRequest
from tests.support.factories import vouched
from tests.support.streams import collect
from webapp.documents import sources
from webapp.registry import services, store
from webapp.registry.models import AdapterVersion


@pytest.fixture
def registered(db, s3_storage, tiny_model_dir, tiny_adapters):
    base = services.base_model_register(name="tiny", path=str(tiny_model_dir), activate=True)
    adapter = services.adapter_register(role="writer", path=str(tiny_adapters["writer"]), base_model=base,
                                        activate=True, override=vouched())
    return base, adapter


def test_registering_stores_the_files_under_their_checksum(registered, s3_storage):
    base, adapter = registered
    keys = s3_storage.keys("site/store/")
    for version, folder in ((base, Path(base.path)), (adapter, Path(adapter.path))):
        assert version.stored == f"versions/{version.sha256}"
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert sorted(k.removeprefix(f"site/store/{version.stored}/") for k in keys
                      if k.startswith(f"site/store/{version.stored}/")) == names
        assert f"site/store/manifests/{version.sha256}.json" in keys


def test_a_machine_without_the_files_downloads_verifies_and_reuses_them(registered, settings, monkeypatch):
    _, adapter = registered
    downloads = []
    real = store._download
    monkeypatch.setattr(store, "_download", lambda *a: downloads.append(a[1]) or real(*a))
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(services.local_path(adapter))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 1 and downloads == [adapter.stored]  # four asked at once, one download
    folder = Path(folders[0])
    assert folder == settings.MODEL_CACHE_DIR / adapter.sha256 and folder_sha256(folder) == adapter.sha256
    assert services.local_path(adapter) == str(folder) and len(downloads) == 1  # the cache, next time
    assert not [p for p in settings.MODEL_CACHE_DIR.iterdir() if p.name.endswith(".partial")]


def test_a_corrupt_download_fails_only_the_requests_that_use_it(registered, s3_storage, settings, tiny_model_dir):
    base, adapter = registered
    weights = f"site/store/{adapter.stored}/adapter_model.safetensors"
    s3_storage.client().put_object(Bucket=s3_storage.bucket, Key=weights, Body=b"not the adapter")
    spec = services.resolve_adapter("writer")
    assert "do not match the registered checksum" in spec.problem
    assert not (settings.MODEL_CACHE_DIR / adapter.sha256).exists()  # nothing half-verified is kept
    engine = TransformersEngine(services.local_path(base), dtype="float32", base_model_name="tiny")
    prompt = [{"role": "user", "content": "Write about terns."}]
    _, results = collect(engine, [GenerationRequest(id="bad", messages=prompt, adapter=spec, max_new_tokens=6),
                               GenerationRequest(id="fine", messages=prompt, max_new_tokens=6)])
    assert results["bad"].finish_reason == "error" and "checksum" in results["bad"].error
    assert results["fine"].finish_reason == "length"
    engine.close()


def test_a_version_missing_from_the_store_says_so(registered, s3_storage):
    _, adapter = registered
    s3_storage.client().delete_object(Bucket=s3_storage.bucket, Key=f"site/store/manifests/{adapter.sha256}.json")
    spec = services.adapter_spec(AdapterVersion.objects.get(pk=adapter.pk))
    assert "not in the store" in spec.problem and spec.name == "writer@1"


def test_an_uploaded_source_is_stored_and_read_back_through_object_storage(s3_storage, project, owner,
                                                                           django_capture_on_commit_callbacks):
    upload = SimpleUploadedFile("terns.txt", b"Arctic terns migrate from pole to pole every year.\n" * 20)
    with django_capture_on_commit_callbacks():  # its extraction is queued; run here instead
        source = sources.source_upload(project=project, user=owner, upload=upload)
    assert any(key.startswith("site/media/") and key.endswith(".txt") for key in s3_storage.keys("site/media/"))
    source = sources.source_extract(source_id=source.pk)
    assert source.status == "ready", source.error
    assert "Arctic terns" in source.text
    sources.source_delete(source=source)
