"""Pipeline model parallel (`--strategy pipeline`, training/pipeline.py) on CPU with gloo: two
ranks, each holding only its decoder layers, follow the one-process loss curve of the LoRA and
the distill recipes, and leave the same output a one-process run does. (Its checkpoints:
test_training_sharded.py, with fsdp's.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.test_training_recipes import HELDOUT, recipe, result_of, write_pairs
from tests.test_training_sharded import _losses, _memory, _two_ranks

pytestmark = pytest.mark.slow


def test_lora_in_a_pipeline_of_two_follows_the_one_process_loss_curve_each_rank_holding_its_layers(
        tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "data")
    common = ["--base", tiny_model_dir, "--data", data, "--role", "writer", "--steps", 4, "--batch-size", 4,
              "--micro-batch", 2, "--lr", 5e-3, "--max-length", 96, "--device", "cpu"]
    one = recipe("lora", *common, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stdout + one.stderr
    two = recipe("lora", *common, "--out", tmp_path / "two", "--strategy", "pipeline", launcher=_two_ranks())
    assert two.returncode == 0, two.stdout + two.stderr
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)
    assert result_of(tmp_path / "two")["metrics"]["eval_loss_after"] == pytest.approx(
        result_of(tmp_path / "one")["metrics"]["eval_loss_after"], rel=1e-4)
    memory, whole = _memory(tmp_path / "two"), _memory(tmp_path / "one")
    assert memory["strategy"] == "pipeline" and memory["decoder_layers"] == [1, 1]  # of the model's 2
    for rank in (0, 1):  # the embeddings (most of the tiny model) on one, its tied copy on the other
        assert memory["param_bytes"][rank] < whole["param_bytes"][0]
    from safetensors.torch import load_file

    piped = load_file(Path(result_of(tmp_path / "two")["output"]) / "adapter_model.safetensors")
    whole = load_file(Path(result_of(tmp_path / "one")["output"]) / "adapter_model.safetensors")
    assert piped.keys() == whole.keys()
    for name, tensor in whole.items():
        assert (piped[name] - tensor).abs().max() < 1e-4, name


def test_distill_in_a_pipeline_of_two_follows_the_one_process_loss_curve(tiny_model_dir, tmp_path):
    """The student's tied embeddings and head are held by the first and the last stage: both
    copies take the one-process step."""
    common = ["--teacher", tiny_model_dir, "--data", write_pairs(tmp_path / "data"), "--briefs",
              ROOT / "training" / "data" / "briefs.json", "--generate-tokens", 8, "--eval-text", HELDOUT,
              "--steps", 3, "--batch-size", 4, "--micro-batch", 2, "--lr", 3e-3, "--max-length", 64,
              "--layers", 2, "--device", "cpu"]
    one = recipe("distill", *common, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stdout + one.stderr
    two = recipe("distill", *common, "--out", tmp_path / "two", "--strategy", "pipeline", launcher=_two_ranks())
    assert two.returncode == 0, two.stdout + two.stderr
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)
    from safetensors.torch import load_file

    piped = load_file(Path(result_of(tmp_path / "two")["output"]) / "model.safetensors")
    whole = load_file(Path(result_of(tmp_path / "one")["output"]) / "model.safetensors")
    assert piped.keys() == whole.keys()
    for name, tensor in whole.items():
        assert (piped[name] - tensor).abs().max() < 1e-4, name
    config = json.loads((Path(result_of(tmp_path / "two")["output"]) / "config.json").read_text())
    assert config["num_hidden_layers"] == 2

