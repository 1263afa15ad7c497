"""The quality gate of the engine's weight formats (issue 24): held-out perplexity of each format
against float32 on the bundled model, and what each step of the int8 method buys.

    .venv/bin/python bench/quality_gate.py     # about 2 minutes on 2 cores

Perplexity in 256-token windows over two texts: training/data/gate.txt (the gate's, ~3,300 tokens
written for it and never tuned on) and training/data/heldout.txt (629 tokens, on which alpha 0.7
was picked: shown, not judged on). Calibration (SmoothQuant's input peaks) reads the bundled
research sources, neither text. Gate: int8 within +2% on the gate's text.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from agents.llm import tuning  # noqa: E402
from agents.llm.bundled import bundled_model_dir  # noqa: E402
from agents.llm.quantization import quantize_int8  # noqa: E402


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warnings.simplefilter("ignore")
    folder = bundled_model_dir(ROOT / "var" / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    gate, tuned = tuning.GATE_TEXT.read_text(), (ROOT / "training" / "data" / "heldout.txt").read_text()

    def load(dtype=torch.float32):
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()

    arms = [("float32", lambda: load()), ("bfloat16", lambda: load(torch.bfloat16)),
            ("int8, down-projections float, no smoothing", lambda: quantize_int8(load())),
            ("int8 every Linear, smoothed (the engine's before)",
             lambda: quantize_int8(load(), tokenizer, keep_float=())),
            ("int8, down-projections float, smoothed: the engine's", lambda: quantize_int8(load(), tokenizer))]
    print(f"bundled {folder.name}, gate text {len(tokenizer(gate).input_ids)} tokens, heldout.txt "
          f"{len(tokenizer(tuned).input_ids)} tokens, torch {torch.__version__}\n")
    print("| weights | gate.txt perplexity | vs float32 | gate (+2%) | heldout.txt perplexity | vs float32 |\n"
          "|---|---|---|---|---|---|")
    bases: list[float] = []
    for label, make in arms:
        model = make()
        values = [tuning.perplexity(model, tokenizer, text) for text in (gate, tuned)]
        bases = bases or values
        rises = [value / base - 1 for value, base in zip(values, bases, strict=True)]
        verdict = "pass" if rises[0] <= tuning.MAX_PERPLEXITY_RISE else "fail"
        print(f"| {label} | {values[0]:.3f} | {rises[0]:+.1%} | {verdict} | {values[1]:.3f} | {rises[1]:+.1%} |",
              flush=True)


if __name__ == "__main__":
    main()
