"""Sharded data parallel (`--strategy fsdp`, training/sharding.py) on CPU with gloo: two ranks
follow the one-process loss curve with every decoder layer's weights (the LoRA recipe's frozen
base too) and the optimizer's state split between them, write checkpoints that one rank and two
resume (a pipeline's too), and leave an ordinary output folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port
from tests.test_training_recipes import HELDOUT, metric_lines, recipe, result_of, write_pairs

pytestmark = pytest.mark.slow


def _two_ranks() -> tuple[str, ...]:
    return (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()))


def _losses(out: Path) -> list[float]:
    return [m["loss"] for m in metric_lines(out) if "step" in m]


def _memory(out: Path) -> dict:
    return next(m for m in metric_lines(out) if m.get("event") == "memory")


def test_lora_under_fsdp_follows_the_one_process_loss_curve_with_half_the_weights_per_rank(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "data")
    common = ["--base", tiny_model_dir, "--data", data, "--role", "writer", "--steps", 4, "--batch-size", 4,
              "--lr", 5e-3, "--device", "cpu"]
    one = recipe("lora", *common, "--out", tmp_path / "one", "--micro-batch", 2)
    assert one.returncode == 0, one.stdout + one.stderr
    runs = {}
    for strategy in ("ddp", "fsdp"):
        runs[strategy] = recipe("lora", *common, "--out", tmp_path / strategy, "--micro-batch", 1,
                                "--strategy", strategy, launcher=_two_ranks())
        assert runs[strategy].returncode == 0, runs[strategy].stdout + runs[strategy].stderr
    assert _losses(tmp_path / "fsdp") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)
    assert result_of(tmp_path / "fsdp")["metrics"]["eval_loss_after"] == pytest.approx(
        result_of(tmp_path / "one")["metrics"]["eval_loss_after"], rel=1e-4)
    ddp, fsdp = _memory(tmp_path / "ddp"), _memory(tmp_path / "fsdp")
    for rank in (0, 1):  # each rank holds about half of what a DDP rank holds
        assert fsdp["param_bytes"][rank] <= 0.6 * ddp["param_bytes"][rank], (fsdp, ddp)
        assert fsdp["optimizer_bytes"][rank] <= 0.6 * ddp["optimizer_bytes"][rank], (fsdp, ddp)
    # The output is an ordinary adapter folder, the same adapter DDP's run gives.
    adapter = Path(result_of(tmp_path / "fsdp")["output"])
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "scriptorium.json").is_file()
    from safetensors.torch import load_file

    sharded, whole = load_file(adapter / "adapter_model.safetensors"), load_file(
        Path(result_of(tmp_path / "ddp")["output"]) / "adapter_model.safetensors")
    assert sharded.keys() == whole.keys()
    for name, tensor in whole.items():
        assert sharded[name].shape == tensor.shape and (sharded[name] - tensor).abs().max() < 1e-4, name


def test_distill_under_fsdp_follows_the_one_process_loss_curve(tiny_model_dir, tmp_path):
    common = ["--teacher", tiny_model_dir, "--data", write_pairs(tmp_path / "data"), "--briefs",
              ROOT / "training" / "data" / "briefs.json", "--generate-tokens", 8, "--eval-text", HELDOUT,
              "--steps", 3, "--batch-size", 4, "--lr", 3e-3, "--max-length", 64, "--device", "cpu"]
    one = recipe("distill", *common, "--out", tmp_path / "one", "--micro-batch", 2)
    assert one.returncode == 0, one.stdout + one.stderr
    two = recipe("distill", *common, "--out", tmp_path / "two", "--micro-batch", 1, "--strategy", "fsdp",
                 launcher=_two_ranks())
    assert two.returncode == 0, two.stdout + two.stderr
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)
    config = json.loads((Path(result_of(tmp_path / "two")["output"]) / "config.json").read_text())
    assert config["num_hidden_layers"] == 1


# fsdp: a micro-batch of 1 on each of 2 ranks is one of 4 on one; a pipeline's ranks see the whole batch.
@pytest.mark.parametrize("strategy, micro", [("fsdp", {2: 1, 1: 4}), ("pipeline", {2: 2, 1: 2})])
def test_a_sharded_checkpoint_of_two_ranks_resumes_on_one_and_on_two(tiny_model_dir, tmp_path, strategy, micro):
    """Every rank writes its part under the model's parameter names (fsdp's shards, or a
    pipeline stage's parameters), which one process and two read back."""
    data = write_pairs(tmp_path / "data")
    common = ["--base", tiny_model_dir, "--data", data, "--role", "writer", "--batch-size", 4, "--max-length", 96,
              "--lr", 5e-3, "--device", "cpu", "--strategy", strategy]
    straight = recipe("lora", *common, "--micro-batch", micro[2], "--steps", 4, "--out", tmp_path / "straight",
                      launcher=_two_ranks())
    assert straight.returncode == 0, straight.stdout + straight.stderr
    for ranks in (1, 2):
        out = tmp_path / f"resumed-on-{ranks}"
        first = recipe("lora", *common, "--micro-batch", micro[2], "--steps", 2, "--out", out, launcher=_two_ranks())
        assert first.returncode == 0, first.stdout + first.stderr
        assert (out / "checkpoint" / "sharded").is_dir() and not (out / "checkpoint" / "optimizer.pt").exists()
        again = recipe("lora", *common, "--micro-batch", micro[ranks], "--steps", 4, "--out", out, "--resume",
                       launcher=_two_ranks() if ranks == 2 else (sys.executable,))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "resumed from step 2" in again.stdout
        assert _losses(out) == pytest.approx(_losses(tmp_path / "straight"), rel=1e-4), ranks
    ddp = recipe("lora", *common[:-2], "--steps", 4, "--out", tmp_path / "resumed-on-2", "--resume")
    assert ddp.returncode == 2 and "written by --strategy fsdp or pipeline" in result_of(
        tmp_path / "resumed-on-2")["error"]
