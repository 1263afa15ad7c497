"""Train a LoRA adapter for one agent role from exported pairs (peft), on the serving base model.

    python -m training.lora --base MODEL_DIR --data EXPORT_DIR --role writer --out runs/writer-1
    torchrun --nproc_per_node 4 -m training.lora ...   # data parallel, one GPU per process

The adapter is trained on the pairs labelled "accepted" (add others with --labels) and scored on
the held-out pairs before and after: loss and perplexity of the text people kept. The output
folder's adapter/ is what the registry registers; adapter/scriptorium.json records the role, the
base model's checksum and the metrics, so an adapter is never registered on another base model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from safetensors.torch import save_file

from agents.llm.files import folder_sha256
from training import common, dataset, layout, options, pipeline

log = logging.getLogger("training")



def arguments():
    return options.lora(__doc__.splitlines()[0])


def body(args, dist: common.Dist, output: common.Output, stop: common.StopFlag) -> dict:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    labels = tuple(label.strip() for label in args.labels.split(",") if label.strip())
    train_pairs = dataset.read_pairs(args.data, args.role, labels, "train")
    heldout_pairs = dataset.read_pairs(args.data, args.role, labels, "heldout")
    dataset.check_batching(args, dist, len(train_pairs))
    if not heldout_pairs:
        raise dataset.DatasetError(f"{args.data}: no held-out pairs to evaluate on "
                                  "(export with --heldout above 0 and more than one document)")
    base_sha = folder_sha256(args.base)
    if args.resume and (output.checkpoint / layout.ADAPTER_META).is_file():
        trained_on = common.read_json(output.checkpoint / layout.ADAPTER_META)["base_sha256"]
        if trained_on != base_sha:
            raise dataset.DatasetError(f"the checkpoint in {output.checkpoint} was trained on another base model "
                                      f"({trained_on[:12]}…, this one is {base_sha[:12]}…)")
    common.seed_everything(args.seed)
    model, tokenizer = common.load_model(args.base, dist)
    pad_id = common.pad_id_of(tokenizer)
    train = dataset.pair_examples(tokenizer, train_pairs, args.max_length)
    heldout = dataset.pair_examples(tokenizer, heldout_pairs, args.max_length)
    log.info("%d training and %d held-out pairs for %s", len(train), len(heldout), args.role)

    before = dataset.evaluate(model, heldout, dist, pad_id)
    output.metric(event="eval", when="before", **before)
    log.info("held-out before: loss %.4f, perplexity %.2f", before["loss"], before["perplexity"])
    config = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=[t.strip() for t in args.targets.split(",")])
    model = get_peft_model(model, config)
    meta = {"role": args.role, "base_model": str(args.base.resolve()), "base_sha256": base_sha}

    def save(folder: Path, state_dict: dict | None = None) -> None:
        if isinstance(state_dict, pipeline.AdapterWeights):  # every stage's part, as peft names them
            model.save_pretrained(str(folder))
            save_file(dict(state_dict), folder / "adapter_model.safetensors", metadata={"format": "pt"})
        else:
            model.save_pretrained(str(folder), state_dict=state_dict)
        (folder / layout.ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n")

    def load(folder: Path) -> None:
        set_peft_model_state_dict(model, load_peft_weights(str(folder), device=str(dist.device)))

    state = common.train(model, train, args, dist, output, pad_id=pad_id, save=save, load=load, stop=stop)
    after = common.evaluate(state, model, heldout, dist, pad_id)
    output.metric(event="eval", when="after", **after)
    log.info("held-out after: loss %.4f, perplexity %.2f", after["loss"], after["perplexity"])
    metrics = {"eval_loss_before": before["loss"], "perplexity_before": before["perplexity"],
               "eval_loss_after": after["loss"], "perplexity_after": after["perplexity"],
               "train_pairs": len(train), "heldout_pairs": len(heldout), "steps": state.step,
               "final_train_loss": state.losses[-1] if state.losses else None}
    meta["metrics"] = metrics
    adapter = common.save_output(output, dist, save, "adapter", state)
    return {"metrics": metrics, "output": str(adapter), "kind": "adapter", "role": args.role,
            "base_sha256": base_sha}


def main(argv: list[str] | None = None) -> int:
    return common.main(arguments, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
