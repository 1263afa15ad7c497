"""Which guided-decoding library for the engine: llguidance vs lm-format-enforcer, measured on
this CPU with the bundled model's tokenizer and the chief editor's outline schema.

    .venv/bin/python bench/guided.py     # under a minute; lm-format-enforcer is optional:
                                         # pip install lm-format-enforcer==0.11.3 to measure it

Both libraries walk the same valid answer token by token; at every step each computes the mask
of allowed next tokens. Printed: time to build the tokenizer view and the grammar, time per mask
(mean and worst), and whether every token of the answer was allowed (it must be). The decode
step of the bundled model on 2 cores takes about 15-30 ms, so a mask must cost well under 1 ms.
xgrammar and outlines are not measured: xgrammar's wheel pulls in triton (and a CUDA stack) on
x86-64 Linux, and outlines' vocabulary index builds through the model hub. lm-format-enforcer's
own transformers integration fails to import under transformers 5 (measured here with its core
API instead).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from agents.llm.bundled import bundled_model_dir  # noqa: E402
from agents.roles.chief_editor import outline_schema  # noqa: E402
from webapp.settings import DATA_DIR  # noqa: E402

ANSWER = {"sections": [
    {"heading": "The Pharos of Alexandria", "goal": "Tell how the first great lighthouse was built and lost.",
     "key_points": ["Ptolemy II", "The earthquakes"]},
    {"heading": "Oil lamps and the Fresnel lens", "goal": "Show how a lens made lights visible for miles.",
     "key_points": ["Augustin Fresnel", "Lighthouse keepers"]},
    {"heading": "Automation and modern lights", "goal": "Explain why keepers left and what replaced them.",
     "key_points": ["Electric lamps", "GPS"]},
]}


def walk(name: str, build, mask, consume, ids: list[int]) -> dict:
    started = time.perf_counter()
    state = build()
    built = time.perf_counter() - started
    times, allowed_all = [], True
    for token in ids:
        started = time.perf_counter()
        allowed = mask(state)
        times.append(time.perf_counter() - started)
        allowed_all &= bool(allowed[token])
        consume(state, token)
    return {"library": name, "build_s": built, "mask_ms_mean": 1000 * statistics.mean(times),
            "mask_ms_max": 1000 * max(times), "steps": len(ids), "answer_allowed": allowed_all}


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir(DATA_DIR / "models"))
    schema = outline_schema(3, 5)
    ids = tokenizer(json.dumps(ANSWER, separators=(", ", ": ")), add_special_tokens=False).input_ids
    vocab = len(tokenizer)
    rows = []

    import llguidance
    import llguidance.hf
    started = time.perf_counter()
    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer)
    tokenizer_s = time.perf_counter() - started
    from agents.llm.guided import JSON_STYLE
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_STYLE)
    bits = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)

    def ll_mask(matcher):
        packed = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.uint8)
        return (packed.unsqueeze(-1) & bits).ne(0).flatten()[:vocab]

    row = walk("llguidance 1.9.1", lambda: llguidance.LLMatcher(ll_tokenizer, grammar), ll_mask,
               lambda m, t: m.consume_token(t), ids)
    row["tokenizer_s"] = tokenizer_s
    rows.append(row)

    try:
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer, TokenEnforcerTokenizerData
    except ImportError:
        print("lm-format-enforcer is not installed: only llguidance measured")
    else:
        # Its transformers integration does not import under transformers 5 (it needs the removed
        # transformers.tokenization_utils.PreTrainedTokenizerBase); its tokenizer data is built
        # here the way that integration builds it.
        started = time.perf_counter()
        zero = tokenizer.encode("0")[-1]
        special = set(tokenizer.all_special_ids)
        regular = []
        for token in range(vocab):
            if token in special:
                continue
            after_zero, alone = tokenizer.decode([zero, token])[1:], tokenizer.decode([token])
            regular.append((token, after_zero, len(after_zero) > len(alone)))
        data = TokenEnforcerTokenizerData(regular, lambda ids: tokenizer.decode(ids).rstrip("\ufffd"),
                                          tokenizer.eos_token_id, False, vocab)
        tokenizer_s = time.perf_counter() - started
        prefix: list[int] = []

        def unpatterned(node):
            """It refuses a string with both a pattern and a length ("not currently supported"):
            it is measured on the schema without patterns, a lighter job."""
            if isinstance(node, dict):
                return {k: unpatterned(v) for k, v in node.items() if k != "pattern"}
            return [unpatterned(v) for v in node] if isinstance(node, list) else node

        def lmfe_build():
            return TokenEnforcer(data, JsonSchemaParser(unpatterned(schema)))

        def lmfe_mask(enforcer):
            allowed = torch.zeros(vocab, dtype=torch.bool)
            allowed[enforcer.get_allowed_tokens(list(prefix)).allowed_tokens] = True
            return allowed

        def lmfe_consume(enforcer, token):
            prefix.append(token)

        row = walk("lm-format-enforcer 0.11.3 (no patterns)", lmfe_build, lmfe_mask, lmfe_consume, ids)
        row["tokenizer_s"] = tokenizer_s
        rows.append(row)

    print(f"Tokenizer: {vocab} tokens; answer: {len(ids)} tokens; torch threads {torch.get_num_threads()}\n")
    print("| library | tokenizer view s | grammar s | mask ms (mean) | mask ms (worst) | answer allowed |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['library']} | {row['tokenizer_s']:.2f} | {row['build_s']:.3f} | {row['mask_ms_mean']:.3f} | "
              f"{row['mask_ms_max']:.2f} | {row['answer_allowed']} |")
    if len(rows) == 2:
        ratio = rows[1]["mask_ms_mean"] / rows[0]["mask_ms_mean"]
        print(f"\nlm-format-enforcer / llguidance, mean mask time: {ratio:.1f}x")


if __name__ == "__main__":
    main()
