"""Distil a smaller student from the serving model: fewer layers, initialised from the teacher's.

    python -m training.distill --teacher MODEL_DIR --out runs/student --layers 15 \
        --data EXPORT_DIR --briefs training/data/briefs.json --eval-text training/data/heldout.txt

The student keeps the teacher's embeddings, final norm and head, and the teacher layers that
change the hidden state most on the training text (--init even: every k-th layer instead), so it
starts close to the teacher. It learns from two kinds of text: the
exported pairs (what people accepted) and what the teacher writes for our briefs, with

    L = alpha * L_hard + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

per target token, where L_hard is the cross-entropy against the text itself. The output folder's
model/ is an ordinary model folder: register it as a base model, give it to a role, or use it as
the draft model for speculative decoding of the teacher (SCRIPTORIUM_DRAFT_MODEL).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from training import common, dataset, options
from training.prune import importances

log = logging.getLogger("training")


def arguments():
    return options.distill(__doc__.splitlines()[0])


def kept_layers(teacher_layers: int, student_layers: int, change=None) -> list[int]:
    """The teacher layers the student starts from: with `change` (how much each layer changes
    its input), the ones that change it most; else evenly spaced, the first and last included.
    On SmolLM2-135M, keeping 15 of 30 layers by change gives a held-out perplexity of 14,000
    before any training; evenly spaced, 3.1 million."""
    if not 1 <= student_layers <= teacher_layers:
        raise dataset.DatasetError(f"--layers must be between 1 and the teacher's {teacher_layers}")
    if change is not None:
        return sorted(torch.argsort(change, descending=True)[:student_layers].tolist())
    if student_layers == 1:
        return [teacher_layers - 1]
    return sorted({round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)})


def make_student(teacher, layers: list[int]):
    """A copy of the teacher with only `layers` (renumbered, so the KV cache indexes line up)."""
    student = copy.deepcopy(teacher)
    student.model.layers = torch.nn.ModuleList([student.model.layers[i] for i in layers])
    for index, layer in enumerate(student.model.layers):
        layer.self_attn.layer_idx = index
    student.config.num_hidden_layers = len(layers)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in layers]
    return student


def brief_prompts(path: Path) -> list[list[dict[str, str]]]:
    """One writer-style chat per section heading of each brief (or one per brief without headings)."""
    try:
        briefs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise dataset.DatasetError(f"{path}: not a JSON list of briefs ({error})") from None
    prompts = []
    for brief in briefs:
        topic, audience = brief.get("topic", ""), brief.get("audience", "general readers")
        for heading in brief.get("reference") or [topic]:
            prompts.append([
                {"role": "system", "content": f"You are writing an article about {topic} for {audience}."},
                {"role": "user", "content": f"Write the section \"{heading}\" in plain prose, about 150 words."}])
    return prompts


@torch.no_grad()
def teacher_texts(teacher, tokenizer, prompts, tokens: int, dist: common.Dist) -> list[dict]:
    """What the teacher writes for each prompt (greedy, so every rank writes the same)."""
    records = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"].to(dist.device)
        out = teacher.generate(ids, max_new_tokens=tokens, do_sample=False, repetition_penalty=1.2,
                               pad_token_id=common.pad_id_of(tokenizer))
        records.append({"prompt": messages, "completion": tokenizer.decode(out[0, ids.shape[1]:],
                                                                           skip_special_tokens=True)})
    return records


def distil_loss(teacher, alpha: float, temperature: float) -> dataset.LogitsLoss:
    def of(student_logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = student_logits[:, :-1].float()
        with torch.no_grad():
            teacher_logits = teacher(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        mask = labels != dataset.IGNORE
        hard = F.cross_entropy(logits[mask], labels[mask], reduction="sum")
        soft_student = F.log_softmax(logits[mask] / temperature, dim=-1)
        soft_teacher = F.log_softmax(teacher_logits[mask] / temperature, dim=-1)
        kl = F.kl_div(soft_student, soft_teacher, log_target=True, reduction="sum")  # KL(teacher || student)
        return alpha * hard + (1 - alpha) * temperature ** 2 * kl
    return dataset.LogitsLoss(of)


def body(args, dist: common.Dist, output: common.Output, stop: common.StopFlag) -> dict:
    common.seed_everything(args.seed)
    teacher, tokenizer = common.load_model(args.teacher, dist)
    teacher.eval().requires_grad_(False)
    pad_id = common.pad_id_of(tokenizer)
    records = dataset.read_pairs(args.data, args.role, ("accepted",)) if args.data else []
    if args.briefs:
        generated = teacher_texts(teacher, tokenizer, brief_prompts(args.briefs), args.generate_tokens, dist)
        log.info("the teacher wrote %d texts for %s", len(generated), args.briefs)
        if dist.is_main:
            with open(output.folder / "teacher_texts.jsonl", "w") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in generated)
        records += generated
    examples = dataset.pair_examples(tokenizer, records, args.max_length)
    for path in args.text:
        examples += dataset.encode_text(tokenizer, path.read_text(), args.max_length)
    if not examples:
        raise dataset.DatasetError("nothing to learn from: give --data, --briefs or --text")
    heldout = dataset.encode_text(tokenizer, args.eval_text.read_text(), args.max_length)

    change = importances(teacher, examples[:32], dist.device)[0] if args.init == "importance" else None
    layers = kept_layers(teacher.config.num_hidden_layers,
                         args.layers or max(1, teacher.config.num_hidden_layers // 2), change)
    student = make_student(teacher, layers)
    student.requires_grad_(True)
    teacher_eval = dataset.evaluate(teacher, heldout, dist, pad_id)
    before = dataset.evaluate(student, heldout, dist, pad_id)
    output.metric(event="eval", when="before", teacher=teacher_eval, **before)
    log.info("student of %d/%d layers %s; held-out perplexity teacher %.2f, student %.2f",
             len(layers), teacher.config.num_hidden_layers, layers, teacher_eval["perplexity"], before["perplexity"])

    save, load = common.model_files(student, tokenizer, dist.device)

    state = common.train(student, examples, args, dist, output, pad_id=pad_id, save=save, load=load, stop=stop,
                         loss_fn=distil_loss(teacher, args.alpha, args.temperature))
    after = common.evaluate(state, student, heldout, dist, pad_id)
    output.metric(event="eval", when="after", **after)
    log.info("held-out perplexity after distillation: %.2f (teacher %.2f)", after["perplexity"],
             teacher_eval["perplexity"])
    metrics = {"teacher_perplexity": teacher_eval["perplexity"], "perplexity_before": before["perplexity"],
               "perplexity_after": after["perplexity"],
               "perplexity_ratio": round(after["perplexity"] / teacher_eval["perplexity"], 4),
               "layers": layers, "teacher_layers": teacher.config.num_hidden_layers,
               "parameters": sum(p.numel() for p in student.parameters()),
               "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
               "examples": len(examples), "steps": state.step, "alpha": args.alpha, "temperature": args.temperature}
    folder = common.save_output(output, dist, save, "model", state)
    return {"metrics": metrics, "output": str(folder), "kind": "model"}


def main(argv: list[str] | None = None) -> int:
    return common.main(arguments, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
