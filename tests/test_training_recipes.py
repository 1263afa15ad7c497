"""Every recipe in training/ run end to end on the tiny model, the way an admin runs it
(`python -m training.X`, and torchrun for data parallel): the files it writes, and metrics that
moved the right way. Bad input ends with a clear message and a usable checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.processes import ROOT, free_port, wait_for

# Every test here runs a recipe as its own process, as an admin would: slow, like the other
# tests that start processes (make test-fast leaves them out).
pytestmark = pytest.mark.slow

HELDOUT = ROOT / "training" / "data" / "heldout.txt"
TEXT = HELDOUT.read_text()


def write_pairs(folder: Path, role: str = "writer", train: int = 8, heldout: int = 2) -> Path:
    """Pairs in the format export_training_data writes: writer prompts, harbour sentences."""
    sentences = re.split(r"(?<=[.!?])\s+", TEXT.strip())
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"role": role, "label": "accepted", "completion": " ".join(sentences[i:i + 2]),
                "prompt": [{"role": "system", "content": "You write one section of a guide to the coast."},
                           {"role": "user", "content": f"Write part {i} about the harbour."}]}
               for i in range(0, 2 * (train + heldout), 2)]
    for name, chunk in (("train", records[:train]), ("heldout", records[train:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    return folder


def recipe(name: str, *args, launcher=(sys.executable,), timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([*launcher, "-m", f"training.{name}", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def result_of(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def metric_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_lora_recipe_trains_an_adapter_that_lowers_held_out_loss(tiny_model_dir, tmp_path):
    data, out = write_pairs(tmp_path / "data"), tmp_path / "lora"
    done = recipe("lora", "--base", tiny_model_dir, "--data", data, "--role", "writer", "--out", out,
                  "--steps", 6, "--batch-size", 4, "--micro-batch", 2, "--lr", 5e-3, "--save-every", 3)
    assert done.returncode == 0, done.stdout + done.stderr
    result = result_of(out)
    assert result["status"] == "done" and result["kind"] == "adapter"
    adapter = Path(result["output"])
    for name in ("adapter_config.json", "adapter_model.safetensors", "scriptorium.json"):
        assert (adapter / name).is_file(), name
    meta = json.loads((adapter / "scriptorium.json").read_text())
    assert meta["role"] == "writer" and len(meta["base_sha256"]) == 64
    metrics = result["metrics"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    steps = [m for m in metric_lines(out) if "step" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5, 6] and steps[-1]["loss"] < steps[0]["loss"]
    assert (out / "checkpoint" / "trainer.json").is_file()


def test_distill_recipe_builds_a_student_with_fewer_layers_that_learns(tiny_model_dir, tmp_path):
    out = tmp_path / "distill"
    done = recipe("distill", "--teacher", tiny_model_dir, "--out", out, "--data", write_pairs(tmp_path / "data"),
                  "--briefs", ROOT / "training" / "data" / "briefs.json", "--generate-tokens", 16, "--eval-text",
                  HELDOUT, "--steps", 8, "--batch-size", 4, "--micro-batch", 2, "--lr", 3e-3,
                  "--max-length", 128, "--alpha", 0.5, "--temperature", 2.0)
    assert done.returncode == 0, done.stdout + done.stderr
    result = result_of(out)
    metrics = result["metrics"]
    config = json.loads((Path(result["output"]) / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and metrics["teacher_layers"] == 2
    assert metrics["parameters"] < metrics["teacher_parameters"]
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    generated = (out / "teacher_texts.jsonl").read_text().splitlines()
    briefs = json.loads((ROOT / "training" / "data" / "briefs.json").read_text())
    assert len(generated) == sum(len(brief["reference"]) for brief in briefs)  # one per section heading
    assert all(json.loads(line)["completion"] for line in generated)


def test_prune_recipe_removes_layers_and_channels_and_healing_helps(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out, text = tmp_path / "prune", HELDOUT
    done = recipe("prune", "--model", tiny_model_dir, "--out", out, "--drop-layers", 1, "--mlp-keep", 0.5,
                  "--calibration", text, "--eval-text", text, "--heal-steps", 4, "--text", text,
                  "--batch-size", 2, "--micro-batch", 1, "--max-length", 64, "--lr", 1e-3)
    assert done.returncode == 0, done.stdout + done.stderr
    result = result_of(out)
    metrics = result["metrics"]
    assert metrics["layers"] == 1 and metrics["intermediate_size"] == 64
    assert metrics["parameters_after"] < metrics["parameters_before"]
    assert metrics["perplexity_after"] < metrics["perplexity_pruned"]
    model = AutoModelForCausalLM.from_pretrained(result["output"])
    assert sum(p.numel() for p in model.parameters()) == metrics["parameters_after"]
    assert model.model.layers[0].mlp.gate_proj.out_features == 64


def test_quantize_recipe_writes_an_int8_folder_the_engine_serves(tiny_model_dir, tmp_path):
    from agents.llm.transformers_backend import TransformersEngine
    from agents.llm.types import GenerationRequest

    out = tmp_path / "int8"
    done = recipe("quantize", "--model", tiny_model_dir, "--out", out, "--eval-text", HELDOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    result = result_of(out)
    metrics = result["metrics"]
    # Float embeddings (for the lookup) and the down-projections (their int8 activations cost the
    # most perplexity), every other Linear in one byte a weight, the head as an untied int8 copy:
    # on this embedding-heavy tiny model that is more than float's tied folder (on the bundled
    # model, less than half).
    from transformers import AutoModelForCausalLM

    float_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    embeddings = float_model.model.embed_tokens.weight.numel()
    linears = sum((4 if name.endswith("down_proj") else 1) * m.weight.numel()
                  for name, m in float_model.named_modules() if isinstance(m, torch.nn.Linear))
    assert metrics["bytes_after"] < 1.1 * (4 * embeddings + linears) + 2_000_000  # a float head would add 4x
    assert metrics["perplexity_ratio"] < 1.1
    assert metrics["decode_tokens_per_s_after"] > 0 and metrics["prefill_s_after"] > 0
    engine = TransformersEngine(result["output"])
    assert engine.int8
    deltas = list(engine.stream([GenerationRequest(id="q", prompt="The harbour", max_new_tokens=5)]))
    assert deltas[-1].finished and deltas[-1].completion_tokens == 5


@pytest.mark.slow
def test_two_processes_under_torchrun_follow_the_one_process_loss_curve(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "data")
    common = ["--base", tiny_model_dir, "--data", data, "--role", "writer", "--steps", 5, "--batch-size", 4,
              "--lr", 5e-3, "--device", "cpu"]
    one = recipe("lora", *common, "--out", tmp_path / "one", "--micro-batch", 2)
    assert one.returncode == 0, one.stdout + one.stderr
    # Two ranks of two examples each, one example per micro-step: gradients sync on the second only.
    two = recipe("lora", *common, "--out", tmp_path / "two", "--micro-batch", 1,
                 launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port())))
    assert two.returncode == 0, two.stdout + two.stderr
    assert "[rank 1]" not in two.stdout  # rank 0 alone logs progress
    losses = {run: [m["loss"] for m in metric_lines(tmp_path / run) if "step" in m] for run in ("one", "two")}
    assert len(losses["one"]) == len(losses["two"]) == 5
    assert losses["one"] == pytest.approx(losses["two"], rel=1e-4)
    assert losses["one"][-1] < losses["one"][0]
    assert result_of(tmp_path / "one")["metrics"]["eval_loss_after"] == pytest.approx(
        result_of(tmp_path / "two")["metrics"]["eval_loss_after"], rel=1e-4)


def test_a_dataset_for_another_role_or_too_small_fails_clearly(tiny_model_dir, tmp_path):
    from training import lora

    def run(data: Path, out: str) -> int:  # in this process: the checks happen before any training
        return lora.main([str(a) for a in ("--base", tiny_model_dir, "--role", "writer", "--steps", 2,
                                           "--batch-size", 2, "--micro-batch", 1, "--data", data,
                                           "--out", tmp_path / out)])

    assert run(write_pairs(tmp_path / "reviewer", role="reviewer"), "a") == 2
    assert "is for the role 'reviewer', not 'writer'" in result_of(tmp_path / "a")["error"]
    assert run(write_pairs(tmp_path / "tiny", train=1), "b") == 2
    assert "only 1 training example(s); at least 2 are needed" in result_of(tmp_path / "b")["error"]
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty", "c") == 2 and "no such file" in result_of(tmp_path / "c")["error"]
    assert run(write_pairs(tmp_path / "all-train", heldout=0), "d") == 2
    assert "no held-out pairs" in result_of(tmp_path / "d")["error"]
    assert not (tmp_path / "d" / "adapter").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the recipe put the handlers back


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_finishes_the_run(tiny_model_dir, tmp_path):
    data, out = write_pairs(tmp_path / "data"), tmp_path / "lora"
    args = ["--base", tiny_model_dir, "--data", data, "--role", "writer", "--out", out, "--batch-size", 2,
            "--micro-batch", 1, "--save-every", 1000]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "training.lora", *map(str, args), "--steps", "400"], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (out / "metrics.jsonl").is_file() and len(metric_lines(out)) >= 3, timeout=120)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 3, output
    assert result_of(out)["status"] == "cancelled"
    saved = json.loads((out / "checkpoint" / "trainer.json").read_text())
    assert 1 <= saved["step"] < 400
    assert (out / "checkpoint" / "adapter_model.safetensors").is_file()
    assert not (out / "adapter").exists()  # no final output from a cancelled run
    resumed = recipe("lora", *args, "--steps", saved["step"] + 2, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from step {saved['step']}" in resumed.stdout
    steps = [m["step"] for m in metric_lines(out) if "step" in m]
    assert steps[-2:] == [saved["step"] + 1, saved["step"] + 2]
    assert result_of(out)["status"] == "done" and (out / "adapter" / "adapter_model.safetensors").is_file()
