"""int8 weights for CPU serving, with size, speed and perplexity before and after.

    python -m training.quantize --model MODEL_DIR --out runs/int8 --eval-text training/data/heldout.txt

agents/llm/quantization.py: every Linear but the MLP's down-projections (the output head as an
untied copy) in int8 per output channel after SmoothQuant's migration calibrated on the bundled
sources, activations quantized per row on the fly by fbgemm. The output folder's model/ loads
directly in the engine (CPU only). It takes no training, so it runs in one process; under torchrun only rank 0 works.
"""

from __future__ import annotations

import logging

import torch

from agents.llm.quantization import load_int8, quantize_int8, save_int8
from training import common, dataset, options
from training.footprint import folder_bytes, speed

log = logging.getLogger("training")


def arguments():
    return options.quantize(__doc__.splitlines()[0])


def measure(model, tokenizer, examples, text: str, dist: common.Dist) -> dict:
    result = dataset.evaluate(model, examples, common.Dist(device=torch.device("cpu")), common.pad_id_of(tokenizer))
    return {"perplexity": result["perplexity"], **speed(model, tokenizer, text)}


def body(args, dist: common.Dist, output: common.Output, stop: common.StopFlag) -> dict:
    if dist.device.type != "cpu":
        raise dataset.DatasetError("int8 dynamic quantization is for CPU serving: run with --device cpu")
    folder = output.folder / "model"
    if not dist.is_main:
        return {"metrics": {}, "output": str(folder), "kind": "model"}
    model, tokenizer = common.load_model(args.model, common.Dist(device=torch.device("cpu")))
    model.eval()
    text = args.eval_text.read_text()
    examples = dataset.encode_text(tokenizer, text, args.max_length)
    if not examples:
        raise dataset.DatasetError(f"{args.eval_text}: too little text to measure on")
    before = {"bytes": folder_bytes(args.model), **measure(model, tokenizer, examples, text, dist)}
    log.info("float: %s", before)
    save_int8(quantize_int8(model, tokenizer), tokenizer, folder)
    quantized = load_int8(folder)  # measured as it will be served: loaded back from the folder
    after = {"bytes": folder_bytes(folder), **measure(quantized, tokenizer, examples, text, dist)}
    log.info("int8: %s", after)
    metrics = {f"{key}_{when}": value for when, values in (("before", before), ("after", after))
               for key, value in values.items()}
    metrics.update(size_ratio=round(after["bytes"] / before["bytes"], 4),
                   perplexity_ratio=round(after["perplexity"] / before["perplexity"], 4),
                   decode_speedup=round(after["decode_tokens_per_s"] / before["decode_tokens_per_s"], 3))
    for when in ("before", "after"):
        output.metric(event="eval", when=when, **{k: v for k, v in metrics.items() if k.endswith(when)})
    return {"metrics": metrics, "output": str(folder), "kind": "model"}


def main(argv: list[str] | None = None) -> int:
    return common.main(arguments, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
