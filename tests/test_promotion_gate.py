"""The promotion gate: a trained version is measured against the one it would replace on held-out
briefs, filter off and on, before it can be activated; a worse one needs a recorded staff override."""

from __future__ import annotations

import json
import shutil

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents import evaluation, gate
from webapp import llm
from webapp.jobs import gate as job_gate
from webapp.registry import services
from webapp.registry.models import AdapterVersion, VersionStatus

BRIEFS = [{"topic": f"{animal} of the northern coast", "words": 900, "domain": domain}
          for animal, domain in (("Gulls", "birds"), ("Terns", "birds"), ("Seals", "mammals"), ("Otters", "mammals"))]


@pytest.fixture
def writers(db, settings, tiny_model_dir, tiny_adapters, tmp_path):
    """The tiny model (the first base model: active without a gate) and two writer adapters with
    the same weights, the first active by an override."""
    settings.SCRIPTORIUM_LLM_DTYPE, settings.SCRIPTORIUM_LLM_WEIGHTS = "float32", "float32"
    base = services.base_model_register(name=tiny_model_dir.name, path=str(tiny_model_dir), activate=True)
    folders = []
    for version in (1, 2):
        folders.append(tmp_path / f"writer-{version}")
        shutil.copytree(tiny_adapters["writer"], folders[-1])
    first = services.adapter_register(role="writer", path=str(folders[0]), base_model=base, activate=True,
                                      override=services.Override(by="olivia", why="the first writer adapter"))
    second = services.adapter_register(role="writer", path=str(folders[1]), base_model=base)
    briefs = tmp_path / "briefs.json"
    briefs.write_text(json.dumps(BRIEFS))
    return first, second, briefs


def _measured(defects_off: float, defects_on: float = 0.0, length: float = 80.0) -> dict:
    return {"off": {"defects": defects_off, "S_l": length, "words": 100},
            "on": {"defects": defects_on, "S_l": length, "words": 100}}


def test_the_rule_lets_a_tie_through_and_names_each_measure_a_candidate_is_worse_on():
    assert gate.verdict(_measured(4.0), _measured(4.0)) == (True, [])
    assert gate.verdict(_measured(1.0), _measured(4.0))[0]
    passed, reasons = gate.verdict(_measured(9.0, 2.0, 60.0), _measured(4.0, 0.0, 80.0))
    assert not passed
    assert [reason.split(":")[0] for reason in reasons] == [
        "summed defects of its own text (filter off)", "summed defects of what readers get (filter on)",
        "length score S_l"]


def test_the_gate_writes_held_out_briefs_with_both_versions_stores_the_comparison_and_promotes_a_pass(writers):
    """Through the real transformers engine: the candidate and the active version write the test
    half's briefs, greedy, filter off and on; equal weights measure equal, and a tie passes."""
    first, second, briefs = writers
    call_command("gate", "writer@2", "--briefs", str(briefs), "--count", "1", "--max-words", "40", "--promote")
    second.refresh_from_db()
    record = second.gate
    assert record["passed"] and record["reasons"] == []
    assert record["candidate"]["version"] == "writer@2" and record["active"]["version"] == "writer@1"
    assert record["briefs"]["numbers"] == evaluation.halves(BRIEFS)["test"][:1]  # never the dev half
    for arm in ("off", "on"):
        assert record["candidate"][arm] == {**record["active"][arm], "briefs": record["active"][arm]["briefs"]}
        assert [row["topic"] for row in record["candidate"][arm]["briefs"]] == [
            BRIEFS[n]["topic"] for n in record["briefs"]["numbers"]]
        assert all(row["words"] > 0 for row in record["candidate"][arm]["briefs"])
    assert second.status == VersionStatus.ACTIVE  # promoted on the pass
    assert AdapterVersion.objects.get(pk=first.pk).status == VersionStatus.RETIRED


def test_a_worse_candidate_cannot_be_activated_without_an_override_which_is_recorded(writers, monkeypatch):
    first, second, briefs = writers
    numbers = {"writer@2": _measured(12.0), "writer@1": _measured(3.0)}
    monkeypatch.setattr(gate, "measure", lambda arm, *rest: {"version": arm.label} | numbers[arm.label])
    monkeypatch.setattr(llm, "load_engine", lambda name, folder: None)  # nothing is written here
    record = job_gate.measure(second, briefs)
    assert not record["passed"] and record["reasons"] == ["summed defects of its own text (filter off): 12.0% "
                                                          "against 3.0%"]
    assert not job_gate.promote(second)  # a job set to promote leaves it staged
    with pytest.raises(services.RegistryError, match="has not passed the promotion gate .failed: summed defects"):
        services.adapter_activate(adapter=second)
    with pytest.raises(CommandError, match="has not passed the promotion gate"):
        call_command("activate_adapter", "writer", "2")
    assert AdapterVersion.objects.get(pk=second.pk).status == VersionStatus.STAGED
    call_command("activate_adapter", "writer", "2", "--override", "readers asked for its tone", "--by", "olivia")
    second.refresh_from_db()
    assert second.status == VersionStatus.ACTIVE
    assert second.override["by"] == "olivia" and second.override["why"] == "readers asked for its tone"
    assert second.override["gate"].startswith("failed: summed defects")
    # Rolling back to the version it replaced needs no new gate: it was let through before.
    services.adapter_rollback(role="writer")
    assert AdapterVersion.objects.get(pk=first.pk).status == VersionStatus.ACTIVE


def test_an_unmeasured_version_needs_the_gate_or_an_override_and_a_reviewer_adapter_says_so(writers):
    _, second, _ = writers
    with pytest.raises(services.RegistryError, match=r"\(not measured\)"):
        services.adapter_activate(adapter=second)
    with pytest.raises(services.RegistryError, match="needs no|says why"):
        services.adapter_activate(adapter=second, override=services.Override(by="olivia", why="  "))
    reviewer = services.adapter_register(role="reviewer", path=second.path, base_model=second.base_model)
    with pytest.raises(job_gate.GateError, match="a reviewer adapter is activated with an override"):
        job_gate.measure(reviewer)
    reviewer.refresh_from_db()  # what the admin shows for it
    assert reviewer.gate_summary().startswith("failed: ") and "with an override" in reviewer.gate_summary()


def test_staff_see_the_comparison_and_override_a_failed_gate_in_the_admin_saying_why(writers, client, monkeypatch):
    from django.urls import reverse

    from tests.support.factories import PASSWORD, make_user

    _, second, briefs = writers
    numbers = {"writer@2": _measured(2.0, 0.0, 40.0), "writer@1": _measured(2.0, 0.0, 90.0)}
    monkeypatch.setattr(gate, "measure", lambda arm, *rest: {"version": arm.label} | numbers[arm.label])
    monkeypatch.setattr(llm, "load_engine", lambda name, folder: None)
    job_gate.measure(second, briefs)
    make_user("root", is_staff=True, is_superuser=True)
    client.login(username="root", password=PASSWORD)
    page = client.get(reverse("admin:registry_adapterversion_change", args=[second.pk])).content.decode()
    assert "failed: length score S_l: 40.0 against 90.0" in page
    assert "<td>writer@2</td><td>2.00</td><td>0.00</td><td>40.0</td>" in page
    listing = reverse("admin:registry_adapterversion_changelist")
    response = client.post(listing, {"action": "activate", "_selected_action": [second.pk]}, follow=True)
    assert "has not passed the promotion gate" in response.content.decode()
    asked = client.post(listing, {"action": "activate_with_override", "_selected_action": [second.pk]})
    assert asked.status_code == 200 and 'name="why"' in asked.content.decode()
    assert AdapterVersion.objects.get(pk=second.pk).status == VersionStatus.STAGED
    client.post(listing, {"action": "activate_with_override", "_selected_action": [second.pk],
                          "why": "shorter on purpose: the editors asked"})
    second.refresh_from_db()
    assert second.status == VersionStatus.ACTIVE
    assert (second.override["by"], second.override["why"]) == ("root", "shorter on purpose: the editors asked")
