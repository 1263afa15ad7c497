"""Compression benchmark on the bundled model, one table: the teacher (SmolLM2-135M-Instruct)
vs a distilled student with half its layers vs a pruned model vs int8 weights, all measured the
same way on the same held-out text; then speculative decoding (the student drafts, the teacher
verifies) vs the teacher alone on greedy section requests, with the outputs compared.

    .venv/bin/python bench/compression.py                       # distils, prunes, quantizes, measures
    .venv/bin/python bench/compression.py --student var/bench/student/model   # reuse a student

The recipes run exactly as an admin runs them (`python -m training.X`), their outputs under
var/bench/. Targets (issue 6): student decode >= 1.8x the teacher's at a perplexity ratio <= 1.3;
speculative decoding >= 1.3x faster with identical greedy output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from agents.llm.bundled import bundled_model_dir  # noqa: E402
from agents.llm.quantization import is_int8_folder, load_int8  # noqa: E402
from agents.llm.transformers_backend import TransformersEngine  # noqa: E402
from agents.llm.types import GenerationRequest  # noqa: E402
from training import common, dataset, footprint  # noqa: E402

THREADS = 2
OUT = ROOT / "var" / "bench"
HELDOUT = ROOT / "training" / "data" / "heldout.txt"


def recipe(name: str, folder: str, *args) -> Path:
    """Run training.<name> into var/bench/<folder> (unless it is there already); its model folder."""
    out = OUT / folder
    if (out / "result.json").is_file() and json.loads((out / "result.json").read_text())["status"] == "done":
        return Path(json.loads((out / "result.json").read_text())["output"])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(THREADS))
    print(f"running training.{name} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", f"training.{name}", "--out", str(out), *map(str, args)], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return Path(json.loads((out / "result.json").read_text())["output"])


def load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = load_int8(folder) if is_int8_folder(folder) else AutoModelForCausalLM.from_pretrained(folder,
                                                                                                   dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def measure(label: str, folder: Path) -> dict:
    model, tokenizer = load(folder)
    text = HELDOUT.read_text()
    examples = dataset.encode_text(tokenizer, text, 512)
    ppl = dataset.evaluate(model, examples, common.Dist(), common.pad_id_of(tokenizer))["perplexity"]
    speed = footprint.speed(model, tokenizer, text, prompt_tokens=256, new_tokens=64, repeats=3)
    return {"label": label, "parameters": sum(p.numel() for p in model.parameters()) + _int8_parameters(model),
            "mb": footprint.folder_bytes(folder) / 1e6, "perplexity": ppl, **speed}


def _int8_parameters(model) -> int:
    """Weights of int8 Linear layers, which model.parameters() does not list."""
    from agents.llm.quantization import Int8Linear

    return sum(module.weight_int8.numel() for module in model.modules() if isinstance(module, Int8Linear))


def compression_table(rows: list[dict]) -> list[str]:
    teacher = rows[0]
    out = ["| model | parameters (M) | size on disk MB | decode tok/s | prefill 256 tokens s | perplexity "
           "| decode vs teacher | perplexity ratio |", "|---|---|---|---|---|---|---|---|"]
    print("\n".join(out), flush=True)
    for r in rows:
        params = r["parameters"] / 1e6
        out.append(f"| {r['label']} | {params:.1f} | {r['mb']:.0f} | {r['decode_tokens_per_s']:.1f} | "
                   f"{r['prefill_s']:.3f} | {r['perplexity']:.2f} | "
                   f"{r['decode_tokens_per_s'] / teacher['decode_tokens_per_s']:.2f}x | "
                   f"{r['perplexity'] / teacher['perplexity']:.2f} |")
        print(out[-1], flush=True)
    return out


def section_requests(new_tokens: int) -> list[GenerationRequest]:
    """Greedy writer-style requests on the evaluation briefs (not the ones distillation used)."""
    briefs = json.loads((ROOT / "training" / "data" / "briefs.json").read_text())
    requests = []
    for brief in briefs:
        for heading in brief["reference"][:3]:
            requests.append(GenerationRequest(
                id=f"r{len(requests)}", max_new_tokens=new_tokens, repetition_penalty=1.1,
                messages=[{"role": "system", "content": f"You are writing an article about {brief['topic']} "
                                                         f"for {brief['audience']}."},
                          {"role": "user", "content": f"Write the section \"{heading}\" in plain prose."}]))
    return requests


def decode_each(engine: TransformersEngine, requests) -> tuple[dict[str, str], float, list[float]]:
    texts, acceptance, started = {}, [], time.perf_counter()
    for request in requests:  # one at a time: speculative decoding serves single requests
        for delta in engine.stream([request]):
            texts[request.id] = texts.get(request.id, "") + delta.text
            if delta.finished and "draft_acceptance" in delta.timings:
                acceptance.append(delta.timings["draft_acceptance"])
    return texts, time.perf_counter() - started, acceptance


def speculative_table(teacher: Path, drafts: dict[str, Path], new_tokens: int, ks: list[int]) -> list[str]:
    requests = section_requests(new_tokens)
    plain = TransformersEngine(teacher, dtype="float32")
    decode_each(plain, requests[:1])  # warm-up
    expected, alone_s, _ = decode_each(plain, requests)
    out = [f"| draft | tokens proposed per round | seconds for {len(requests)} requests | speed-up | "
           "draft acceptance | outputs identical |", "|---|---|---|---|---|---|",
           f"| none (teacher alone) | - | {alone_s:.1f} | 1.00x | - | - |"]
    print("\n".join(out), flush=True)
    for name, folder in drafts.items():
        for k in ks:
            engine = TransformersEngine(teacher, dtype="float32", draft_model_path=folder, draft_tokens=k)
            decode_each(engine, requests[:1])
            texts, seconds, acceptance = decode_each(engine, requests)
            same = sum(texts[r.id] == expected[r.id] for r in requests)
            out.append(f"| {name} | {k} | {seconds:.1f} | {alone_s / seconds:.2f}x | "
                       f"{sum(acceptance) / len(acceptance):.0%} | {same}/{len(requests)} |")
            print(out[-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, help="a distilled student folder to measure instead of distilling")
    parser.add_argument("--distill-steps", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--draft-tokens", default="2,3,4", help="tokens the draft proposes per round, to compare")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    teacher = bundled_model_dir(ROOT / "var" / "models")
    started = time.time()
    print(f"# Compression benchmark\n\n{platform.machine()}, {os.cpu_count()} cores, {THREADS} torch threads, "
          f"torch {torch.__version__}, float32 unless int8, greedy\n", flush=True)
    briefs = ROOT / "training" / "data" / "distill_briefs.json"
    student = args.student or recipe(
        "distill", "student", "--teacher", teacher, "--layers", 15, "--briefs", briefs, "--generate-tokens", 160,
        "--text", ROOT / "training" / "data" / "sources" / "sleep" / "sleep-facts.md", "--eval-text", HELDOUT,
        "--steps", args.distill_steps, "--batch-size", 8, "--micro-batch", 4, "--lr", 2e-4, "--alpha", 0.3,
        "--max-length", 256)
    pruned = recipe("prune", "pruned", "--model", teacher, "--drop-layers", 6, "--mlp-keep", 0.75, "--calibration",
                    ROOT / "training" / "data" / "sources" / "sleep" / "sleep-facts.md", "--eval-text", HELDOUT)
    int8 = recipe("quantize", "int8", "--model", teacher, "--eval-text", HELDOUT)
    rows = [measure("teacher: SmolLM2-135M, 30 layers", teacher),
            measure("distilled student, 15 layers", student),
            measure("pruned: 6 layers and 25% of MLP channels removed, no healing", pruned),
            measure("int8 weights (down_proj float)", int8)]
    print()
    table = compression_table(rows)
    print()
    ks = [int(k) for k in args.draft_tokens.split(",")]
    spec = speculative_table(teacher, {"distilled student (15 layers)": student}, args.new_tokens, ks)
    print(f"\n{len(table) - 2} models and {len(spec) - 3} speculative arms in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
