"""The quality gate of the engine's weight formats (issue 24): held-out perplexity of each format
against float32 on the bundled model, and what each step of the int8 method buys.

    .venv/bin/python bench/quality_gate.py     # about 2 minutes on 2 cores

Perplexity over training/data/heldout.txt in 256-token windows; calibration (SmoothQuant's input
peaks) on the bundled research sources, never on the held-out text. Gate: int8 within +2%.
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
    text = tuning.HELDOUT.read_text()

    def load(dtype=torch.float32):
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()

    arms = [("float32", lambda: load()), ("bfloat16", lambda: load(torch.bfloat16)),
            ("int8, no smoothing", lambda: quantize_int8(load())),
            ("int8 (smoothed, alpha 0.7): the engine's", lambda: quantize_int8(load(), tokenizer))]
    print(f"bundled {folder.name}, held-out {len(tokenizer(text).input_ids)} tokens, torch {torch.__version__}\n")
    print("| weights | perplexity | vs float32 | gate (+2%) |\n|---|---|---|---|")
    base = None
    for label, make in arms:
        value = tuning.perplexity(make(), tokenizer, text)
        base = base or value
        rise = value / base - 1
        print(f"| {label} | {value:.3f} | {rise:+.1%} | {'pass' if rise <= tuning.MAX_PERPLEXITY_RISE else 'fail'} |",
              flush=True)


if __name__ == "__main__":
    main()
