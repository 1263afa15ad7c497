"""Train the writer's LoRA on its own best work (rejection-sampling fine-tuning): the base model
plans and writes sections for many briefs, several sampled candidates per section. Each
candidate's text has passed every check of the writers' filter (sentences echoing the prompt,
talking about the writing, holding junk words or off the brief were cut as it streamed); it is
kept if it also fit its word budget in one go and the model wrote it mostly well (no more
sentences cut than kept). The kept texts become training pairs (the writer's prompt and the
clean text) and the adapter is trained on them with the LoRA recipe (training/lora.py).

    python -m training.self_train --base MODEL_DIR --briefs training/data/distill_briefs.json --out runs/writer-rft

The briefs must not be the ones the adapter is judged on (`manage.py evaluate` uses
training/data/briefs.json). data/ in the output folder keeps the pairs (train.jsonl, heldout.jsonl,
split by brief) and rejected.jsonl with the reason each candidate was rejected.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import random
import threading
import time
from pathlib import Path

from agents import coordinator, quality
from agents.outline import Brief, PlannedSection, split_for_writers
from agents.roles import section_writer
from training import common, dataset, layout, lora, options

log = logging.getLogger("training")


def arguments():
    return options.self_train(__doc__.splitlines()[0])


MAX_SELF_REPEAT = 0.1  # share of a text's word 4-grams that repeat an earlier one in it
# A candidate may have had no more sentences cut than it kept. A stricter rule (at most a third
# cut) was tried on 2026-12-04: it kept 30 of 273 candidates (11%) and the adapter trained on them
# wrote more defects than the base model (bench/RESULTS.md), so the first rule stays.


def reject_reason(written: section_writer.WrittenSection, task: section_writer.SectionTask) -> str:
    """Why a candidate is not training data; empty when it passes. Its text passes every check
    already (the search kept no candidate with a defect); it must also have met its word budget,
    and the model must have written it mostly well: no more candidates refused than sentences
    kept, and no loops (at most 10% of its 4-grams repeated within it)."""
    if written.finish != "ok":
        return "off its word budget"
    grams = quality.four_grams(written.text)
    if grams and 1 - len(set(grams)) / len(grams) > MAX_SELF_REPEAT:
        return "repeats itself"
    kept = len(quality.sentences(written.text))
    if len(written.cut) > kept:
        kinds = sorted({kind for kind, _ in written.cut})
        return f"more sentences cut ({len(written.cut)}: {', '.join(kinds)}) than kept ({kept})"
    return ""


def generate(args, out: Path, metric) -> dict:
    """Write candidates for every brief, keep those that pass, and split the kept pairs by brief
    (whole briefs held out; with kept pairs from one brief only, its last pair). Returns counts."""
    from agents.llm.transformers_backend import TransformersEngine

    briefs = json.loads(args.briefs.read_text())[: args.max_briefs or None]
    if not briefs:
        raise dataset.DatasetError(f"{args.briefs}: no briefs")
    engine = TransformersEngine(args.base, dtype="float32", device="cpu" if args.device == "auto" else args.device)
    out.mkdir(parents=True, exist_ok=True)
    kept_pairs: list[dict] = []
    rejected: list[dict] = []
    lock = threading.Lock()

    def one_brief(number: int) -> None:
        item = briefs[number]
        brief = Brief(topic=item["topic"], target_words=int(item.get("words") or args.words),
                      audience=item.get("audience", ""), notes=item.get("notes", ""))
        if item.get("sections"):  # a brief may bring its outline: the chief editor is not asked
            sections = split_for_writers([PlannedSection(heading=str(part["heading"]), goal=str(part.get("goal", "")),
                                                         words=int(part["words"])) for part in item["sections"]],
                                         coordinator.SECTION_MAX_WORDS)
        else:
            sections = coordinator.plan(engine, brief).sections
        tasks = coordinator.writer_tasks(sections)
        outline = coordinator.outline_text(sections)
        kept: set[str] = set()
        for sample in range(args.samples):
            pending = [task for task in tasks if task.key not in kept]
            if not pending:
                break
            sampling = section_writer.WriterOptions(temperature=args.temperature,
                                                    seed=args.seed * 100_000 + number * 1000 + sample * 100)
            written = section_writer.write_sections(engine, brief, outline, pending, options=sampling)
            for task in pending:
                candidate = written[task.key]
                record = {"role": section_writer.ROLE, "prompt": section_writer.messages(brief, outline, task),
                          "completion": candidate.text, "label": "accepted", "brief": number}
                reason = reject_reason(candidate, task)
                with lock:
                    if reason:
                        rejected.append(record | {"label": "rejected", "reason": reason, "cut": candidate.cut})
                    else:
                        kept.add(task.key)
                        kept_pairs.append(record)
        with lock:
            metric(event="generate", brief=number, candidates=len(kept_pairs) + len(rejected), kept=len(kept_pairs))
            log.info("brief %d/%d done: %d of %d candidates kept so far", number + 1, len(briefs), len(kept_pairs),
                     len(kept_pairs) + len(rejected))

    # Several briefs at once: their writers share the engine's batch (one brief fills few rows).
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for future in [pool.submit(one_brief, number) for number in range(len(briefs))]:
            future.result()
    engine.close()
    kept_pairs.sort(key=lambda record: record["brief"])
    candidates = len(kept_pairs) + len(rejected)
    with open(out / "rejected.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in rejected)
    if len(kept_pairs) < 3:
        raise dataset.DatasetError(f"only {len(kept_pairs)} of {candidates} candidates passed every check "
                                   f"(reasons in {out / 'rejected.jsonl'}): too few to train and hold out")
    with_pairs = sorted({record["brief"] for record in kept_pairs})
    random.Random(args.seed).shuffle(with_pairs)
    if len(with_pairs) > 1:
        held = set(with_pairs[:max(1, round(len(with_pairs) * args.heldout_share))])
        heldout = [r for r in kept_pairs if r["brief"] in held]
        train = [r for r in kept_pairs if r["brief"] not in held]
    else:
        train, heldout = kept_pairs[:-1], kept_pairs[-1:]
    for name, records in (("train", train), ("heldout", heldout)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in records)
    counts = {"candidates": candidates, "kept": len(kept_pairs), "train": len(train), "heldout": len(heldout)}
    (out / "manifest.json").write_text(json.dumps({"role": section_writer.ROLE, "briefs": str(args.briefs),
                                                   **counts}, indent=2) + "\n")
    return counts


def _generate_apart(args, out: Path, metrics_file: Path) -> None:
    """generate() in a process of its own (spawned): the engine's CPU weight packing changes
    transformers' view of tied weights for the rest of a process, and the training that follows
    must load the model as it is on disk; its memory is returned before training starts too."""
    def metric(**values) -> None:
        with open(metrics_file, "a") as handle:
            handle.write(json.dumps(values | {"time": round(time.time(), 3)}) + "\n")
    try:
        generate(args, out, metric)
    except dataset.DatasetError as error:
        (out / "error.txt").write_text(str(error))
        raise SystemExit(2) from None


def body(args, dist: common.Dist, output: common.Output, stop: common.StopFlag) -> dict:
    data = output.folder / "data"
    if dist.is_main and not (data / "manifest.json").is_file():  # a resumed job keeps what it generated
        data.mkdir(parents=True, exist_ok=True)
        child = multiprocessing.get_context("spawn").Process(
            target=_generate_apart, args=(args, data, output.folder / layout.METRICS), daemon=True)
        child.start()
        while child.is_alive():
            child.join(1.0)
            if stop.raised:
                child.terminate()
                child.join()
                raise common.Cancelled()
        if child.exitcode != 0:
            error = data / "error.txt"
            raise dataset.DatasetError(error.read_text() if error.is_file() else
                                       f"generating the candidates failed (exit status {child.exitcode})")
    dist.barrier()
    counts = common.read_json(data / "manifest.json")
    args.data, args.labels = data, "accepted"
    result = lora.body(args, dist, output, stop)
    result["metrics"] |= {"candidates": counts["candidates"], "kept": counts["kept"],
                          "kept_share": round(counts["kept"] / max(1, counts["candidates"]), 4)}
    return result


def main(argv: list[str] | None = None) -> int:
    return common.main(arguments, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
