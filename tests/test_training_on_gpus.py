"""The recipes on GPUs: pipeline model parallel (a stage per GPU) and data parallel with NCCL.
Skipped where there are fewer than two CUDA devices."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.support.processes import free_port
from tests.test_training_recipes import metric_lines, recipe, result_of, write_pairs

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")]


def test_a_pipeline_over_two_gpus_follows_the_one_gpu_loss_curve(tiny_model_dir, tmp_path):
    """--strategy pipeline with NCCL: a decoder layer on each GPU."""
    args = ["--base", tiny_model_dir, "--data", write_pairs(tmp_path / "data"), "--role", "writer", "--steps", 3,
            "--batch-size", 4, "--micro-batch", 2, "--max-length", 96, "--lr", 5e-3, "--device", "cuda"]
    one = recipe("lora", *args, "--out", tmp_path / "one")
    two = recipe("lora", *args, "--out", tmp_path / "two", "--strategy", "pipeline",
                 launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port())))
    assert one.returncode == 0 and two.returncode == 0, two.stdout + two.stderr
    losses = [[m["loss"] for m in metric_lines(tmp_path / run) if "step" in m] for run in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    assert result_of(tmp_path / "two")["status"] == "done"


def test_two_gpus_under_torchrun_follow_the_one_gpu_loss_curve(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "data")
    args = ["--base", tiny_model_dir, "--data", data, "--role", "writer", "--steps", 4, "--batch-size", 4,
            "--lr", 5e-3, "--device", "cuda"]
    one = recipe("lora", *args, "--out", tmp_path / "one", "--micro-batch", 2)
    two = recipe("lora", *args, "--out", tmp_path / "two", "--micro-batch", 1,
                 launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port())))
    assert one.returncode == 0 and two.returncode == 0, two.stdout + two.stderr
    losses = [[m["loss"] for m in metric_lines(tmp_path / run) if "step" in m] for run in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    assert json.loads((tmp_path / "two" / "result.json").read_text())["status"] == "done"
