"""Training strategies side by side on CPU (gloo): the bundled model's LoRA recipe run exactly as
an admin runs it, in one process and in two (ddp, fsdp, pipeline), same data, same global batch. Per rank:
the parameter and optimizer-state bytes it holds, training tokens a second and peak resident
memory (the recipe's metrics.jsonl: events "memory" and "speed"), with fsdp/ddp ratios, and the
loss curves against one process.

    .venv/bin/python bench/training.py                # 6 steps of 4 examples, 256 tokens at most
    .venv/bin/python bench/training.py --steps 10 --max-length 512

Targets (issue 28): fsdp's parameter + optimizer memory per rank at most 0.6x ddp's with 2 ranks;
the pipeline's parameter memory per rank at most 0.6x the whole model's; loss curves equal to one
process (relative 1e-4). Outputs under var/bench/training/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agents.llm.bundled import bundled_model_dir  # noqa: E402

HELDOUT = ROOT / "training" / "data" / "heldout.txt"


def pairs(folder: Path, train: int = 16, heldout: int = 4) -> Path:
    """Writer pairs from the held-out text (the format export_training_data writes): each
    completion three sentences of it, in turn."""
    sentences = re.split(r"(?<=[.!?])\s+", HELDOUT.read_text().strip())
    records = [{"role": "writer", "label": "accepted",
                "completion": " ".join(sentences[(i + k) % len(sentences)] for k in range(3)),
                "prompt": [{"role": "system", "content": "You write one section of an article."},
                           {"role": "user", "content": f"Write part {i} of the article."}]}
               for i in range(train + heldout)]
    folder.mkdir(parents=True, exist_ok=True)
    for name, chunk in (("train", records[:train]), ("heldout", records[train:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(name: str, processes: int, strategy: str, common: list[str], out: Path, micro: int) -> dict:
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_port", str(free_port())]
    args = [*launcher, "-m", "training.lora", *common, "--out", str(out / name), "--strategy", strategy,
            "--micro-batch", str(micro)]
    done = subprocess.run(args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    return {"losses": [m["loss"] for m in lines if "step" in m],
            "memory": next(m for m in lines if m.get("event") == "memory"),
            "speed": next(m for m in lines if m.get("event") == "speed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    out = ROOT / "var" / "bench" / "training"
    base = bundled_model_dir(ROOT / "var" / "models")
    common = ["--base", str(base), "--data", str(pairs(out / "data")), "--role", "writer", "--device", "cpu",
              "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
              "--lr", "1e-3", "--save-every", "0"]
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch threads 1 per process; "
          f"the bundled model, LoRA r=16 on q,k,v,o; {args.steps} steps of {args.batch_size} examples")
    runs = {"1 process": run("one", 1, "ddp", common, out, micro=args.batch_size // 2),
            "2 ddp": run("ddp", 2, "ddp", common, out, micro=args.batch_size // 4 or 1),
            "2 fsdp": run("fsdp", 2, "fsdp", common, out, micro=args.batch_size // 4 or 1),
            # every stage sees the whole batch, in micro-batches that flow through both
            "2 pipeline": run("pipeline", 2, "pipeline", common, out, micro=args.batch_size // 2)}
    print("\n| run | rank | params MB | optimizer MB | tokens/s | peak RSS MB | max loss diff vs 1 process |")
    print("|---|---|---|---|---|---|---|")
    one = runs["1 process"]["losses"]
    for name, result in runs.items():
        memory, speed = result["memory"], result["speed"]
        diff = max(abs(a - b) / abs(b) for a, b in zip(result["losses"], one, strict=True))
        for rank in range(len(memory["param_bytes"])):
            print(f"| {name} | {rank} | {memory['param_bytes'][rank] / 2**20:.1f} | "
                  f"{memory['optimizer_bytes'][rank] / 2**20:.2f} | {speed['tokens_per_s'][rank]:.0f} | "
                  f"{speed['peak_rss_mb'][rank]:.0f} | {diff:.1e} |")
    ddp, fsdp = runs["2 ddp"], runs["2 fsdp"]
    held = [(fsdp["memory"]["param_bytes"][r] + fsdp["memory"]["optimizer_bytes"][r])
            / (ddp["memory"]["param_bytes"][r] + ddp["memory"]["optimizer_bytes"][r]) for r in (0, 1)]
    speed = [fsdp["speed"]["tokens_per_s"][r] / ddp["speed"]["tokens_per_s"][r] for r in (0, 1)]
    rss = [fsdp["speed"]["peak_rss_mb"][r] / ddp["speed"]["peak_rss_mb"][r] for r in (0, 1)]
    print(f"\nfsdp / ddp per rank: parameters + optimizer state {held[0]:.2f}x, {held[1]:.2f}x (target <= 0.6x); "
          f"tokens/s {speed[0]:.2f}x, {speed[1]:.2f}x; peak RSS {rss[0]:.2f}x, {rss[1]:.2f}x")
    piped, whole = runs["2 pipeline"], runs["1 process"]
    share = [piped["memory"]["param_bytes"][r] / whole["memory"]["param_bytes"][0] for r in (0, 1)]
    speed = [piped["speed"]["tokens_per_s"][r] / ddp["speed"]["tokens_per_s"][r] for r in (0, 1)]
    print(f"pipeline per rank: parameters {share[0]:.3f}x, {share[1]:.3f}x the whole model's (target <= 0.6x); "
          f"tokens/s {speed[0]:.2f}x, {speed[1]:.2f}x ddp's (each stage computes every example, for its layers)")


if __name__ == "__main__":
    main()
