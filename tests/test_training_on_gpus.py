"""The recipes on GPUs: model parallel (one model spread over several GPUs with per-device memory
limits) and data parallel with NCCL. Skipped where there are fewer than two CUDA devices."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.support.processes import free_port
from tests.test_training_recipes import metric_lines, recipe, result_of, write_pairs

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")]


def test_a_model_spread_over_gpus_loads_and_trains(tiny_model_dir, tmp_path):
    from training import common

    # Two layers of about 0.1 MB each and a 12 MB embedding: a 13 MiB limit forces a split.
    model, _ = common.load_model(tiny_model_dir, common.Dist(device=torch.device("cuda", 0)), max_memory="13MiB")
    assert len({str(d) for d in model.hf_device_map.values()}) >= 2, model.hf_device_map
    out = tmp_path / "lora"
    done = recipe("lora", "--base", tiny_model_dir, "--data", write_pairs(tmp_path / "data"), "--role", "writer",
                  "--out", out, "--steps", 3, "--batch-size", 2, "--micro-batch", 1, "--device", "cuda",
                  "--max-memory", "13MiB", "--lr", 5e-3)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = result_of(out)["metrics"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]


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
