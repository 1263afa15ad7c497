"""Structured pruning: remove whole layers and MLP channels, so the saved model is really smaller.

    python -m training.prune --model MODEL_DIR --out runs/pruned --drop-layers 6 --mlp-keep 0.75 \
        --calibration training/data/heldout.txt --eval-text training/data/heldout.txt [--heal-steps 100 --text more.txt]

Which layers go: the ones that change their input least on calibration text (1 - cosine
similarity between a layer's input and output hidden states, as in ShortGPT). Which MLP channels
go: those with the smallest mean |act(gate) * up| times the norm of their down-projection column,
the same number in every layer (the config has one intermediate size). An optional short healing
fine-tune on plain text follows. Perplexity on --eval-text is measured before and after.
"""

from __future__ import annotations

import logging

import torch

from training import common, dataset, options

log = logging.getLogger("training")


def arguments():
    return options.prune(__doc__.splitlines()[0])


@torch.no_grad()
def importances(model, examples: list[dataset.Example], device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per layer: how much it changes its input (mean 1 - cosine). Per layer and MLP channel:
    mean |act(gate(x)) * up(x)| weighted by the channel's down-projection norm."""
    layers = model.model.layers
    change = torch.zeros(len(layers))
    channel = [torch.zeros(layer.mlp.down_proj.in_features) for layer in layers]
    hooks, tokens = [], 0

    def capture(index):
        def hook(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            change[index] += float((1 - cosine).sum())
        return hook

    def capture_mlp(index):
        def hook(module, args):
            channel[index] += args[0].float().abs().sum(dim=(0, 1)).cpu()
        return hook

    for index, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(capture(index), with_kwargs=True))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(capture_mlp(index)))
    try:
        for example in examples:
            ids = torch.tensor([example.input_ids], device=device)
            model(input_ids=ids)
            tokens += ids.shape[1]
    finally:
        for hook in hooks:
            hook.remove()
    weighted = [c / tokens * layer.mlp.down_proj.weight.float().norm(dim=0).cpu()
                for c, layer in zip(channel, layers, strict=True)]
    return change / tokens, weighted


def drop_layers(model, drop: list[int]) -> None:
    kept = [layer for index, layer in enumerate(model.model.layers) if index not in set(drop)]
    model.model.layers = torch.nn.ModuleList(kept)
    for index, layer in enumerate(kept):
        layer.self_attn.layer_idx = index
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [t for i, t in enumerate(model.config.layer_types) if i not in set(drop)]
    model.config.num_hidden_layers = len(kept)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Linear:
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype,
                             device=weight.device)
    linear.weight.data.copy_(weight)
    if bias is not None:
        linear.bias.data.copy_(bias)
    return linear


def prune_mlp(model, scores: list[torch.Tensor], keep: int) -> None:
    for layer, score in zip(model.model.layers, scores, strict=True):
        mlp = layer.mlp
        chosen = torch.topk(score, keep).indices.sort().values.to(mlp.down_proj.weight.device)
        mlp.gate_proj = _linear(mlp.gate_proj.weight[chosen], mlp.gate_proj.bias[chosen] if mlp.gate_proj.bias
                                is not None else None)
        mlp.up_proj = _linear(mlp.up_proj.weight[chosen], mlp.up_proj.bias[chosen] if mlp.up_proj.bias
                              is not None else None)
        mlp.down_proj = _linear(mlp.down_proj.weight[:, chosen], mlp.down_proj.bias)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = keep
    model.config.intermediate_size = keep


def body(args, dist: common.Dist, output: common.Output, stop: common.StopFlag) -> dict:
    if not 0 < args.mlp_keep <= 1:
        raise dataset.DatasetError("--mlp-keep must be above 0 and at most 1")
    common.seed_everything(args.seed)
    model, tokenizer = common.load_model(args.model, dist)
    model.eval()
    layer_count = model.config.num_hidden_layers
    if not 0 <= args.drop_layers < layer_count:
        raise dataset.DatasetError(f"--drop-layers must be between 0 and {layer_count - 1} "
                                  f"(the model has {layer_count})")
    pad_id = common.pad_id_of(tokenizer)
    heldout = dataset.encode_text(tokenizer, args.eval_text.read_text(), args.max_length)
    calibration = dataset.encode_text(tokenizer, args.calibration.read_text(), args.max_length)
    if not heldout or not calibration:
        raise dataset.DatasetError("the calibration and evaluation texts must hold at least two tokens each")
    parameters_before = sum(p.numel() for p in model.parameters())
    before = dataset.evaluate(model, heldout, dist, pad_id)
    output.metric(event="eval", when="before", **before)

    change, channels = importances(model, calibration, dist.device)
    dropped = sorted(torch.argsort(change)[:args.drop_layers].tolist())
    log.info("layer change scores %s; dropping layers %s", [round(float(c), 4) for c in change], dropped)
    keep = max(1, round(model.config.intermediate_size * args.mlp_keep))
    if keep < model.config.intermediate_size:
        prune_mlp(model, channels, keep)
    drop_layers(model, dropped)
    pruned = dataset.evaluate(model, heldout, dist, pad_id)
    output.metric(event="eval", when="pruned", **pruned)
    log.info("perplexity %.2f -> %.2f after pruning", before["perplexity"], pruned["perplexity"])

    save, load = common.model_files(model, tokenizer, dist.device)

    after, steps, trained = pruned, 0, None
    if args.heal_steps:
        examples = [e for path in args.text for e in dataset.encode_text(tokenizer, path.read_text(), args.max_length)]
        if not examples:
            raise dataset.DatasetError("--heal-steps needs --text to heal on")
        args.steps = args.heal_steps
        trained = common.train(model, examples, args, dist, output, pad_id=pad_id, save=save, load=load, stop=stop)
        steps = trained.step
        after = common.evaluate(trained, model, heldout, dist, pad_id)
        output.metric(event="eval", when="after", **after)
    metrics = {"perplexity_before": before["perplexity"], "perplexity_pruned": pruned["perplexity"],
               "perplexity_after": after["perplexity"],
               "perplexity_ratio": round(after["perplexity"] / before["perplexity"], 4),
               "parameters_before": parameters_before, "parameters_after": sum(p.numel() for p in model.parameters()),
               "dropped_layers": dropped, "layers": model.config.num_hidden_layers,
               "intermediate_size": model.config.intermediate_size, "heal_steps": steps}
    folder = common.save_output(output, dist, save, "model", trained)
    return {"metrics": metrics, "output": str(folder), "kind": "model"}


def main(argv: list[str] | None = None) -> int:
    return common.main(arguments, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
