"""The writer's adapter trained on its own best work (training/self_train.py) as a training job,
end to end on a tiny model: candidates are written for each brief through the real engine, those
that pass every check become pairs, the LoRA recipe trains on them, and the adapter is registered
as a staged version with its metrics.

A random-weight model writes nothing that passes (junk words, off the brief), so the tiny model
here is first taught a paragraph for each of two headings about tides. Briefs that bring those
outlines get sections that pass; a brief on bread gets the same tides text, off its brief, and
it does not. That is what rejection sampling must be seen doing: keeping
some candidates, rejecting others with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agents.outline import Brief
from agents.roles import section_writer
from training import self_train
from webapp.jobs import training
from webapp.jobs.models import AfterTraining, JobKind, JobStatus, TrainingJob
from webapp.registry import services as registry

# What the taught model writes for each heading: two paragraphs that share no phrase, so the
# writers of one article (who may not repeat each other) can both write theirs.
PARAGRAPHS = {
    "How the Moon moves the sea": "The sea rises and falls twice a day because the Moon pulls on the water of the "
                                  "oceans. When the Sun and the Moon line up, spring tides reach highest.",
    "Reading a tide table": "A printed table lists each low water for every port. Walkers check it before they "
                            "explore rock pools, sandbanks or causeways safely.",
}
BRIEFS = [{"topic": topic, "audience": "families", "words": 60,
           "sections": [{"heading": heading, "goal": "Explain the tides.", "words": 30} for heading in PARAGRAPHS]}
          for topic in ("How tides work", "Why the sea has tides", "Tides for families at the coast")]
BRIEFS.append({"topic": "Baking bread at home", "audience": "families", "words": 60,
               "sections": [{"heading": "Kneading the dough", "words": 30},
                            {"heading": "Baking the loaf", "words": 30}]})


def _teach(out: Path) -> Path:
    """A tiny model (ordinary initial weights: the random test model's large ones learn slowly)
    trained to answer a writer's prompt with the paragraph for its heading and the end token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.support.tiny_models import bundled_tokenizer

    tokenizer = bundled_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True))
    examples = []
    for item in BRIEFS[:3]:
        brief = Brief(item["topic"], 60, audience="families")
        outline = "\n".join(f"{n}. {h} (30 words)" for n, h in enumerate(PARAGRAPHS, 1))
        for index, (heading, paragraph) in enumerate(PARAGRAPHS.items()):
            task = section_writer.SectionTask(str(index), heading, 30, goal="Explain the tides.")
            prompt = tokenizer.apply_chat_template(section_writer.messages(brief, outline, task),
                                                   add_generation_prompt=True, tokenize=False)
            start = len(tokenizer(prompt, add_special_tokens=False).input_ids)
            ids = tokenizer(prompt + paragraph, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            examples.append((torch.tensor([ids]), len(ids) - start))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(STEPS):
        ids, answer = examples[step % len(examples)]
        # Logits only where the answer is predicted: the vocabulary projection is most of the cost.
        logits = model(input_ids=ids, logits_to_keep=answer + 1).logits[0, :-1]
        torch.nn.functional.cross_entropy(logits, ids[0, -answer:]).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


STEPS = 300


@pytest.fixture(scope="module")
def taught_model(tmp_path_factory) -> Path:
    return _teach(tmp_path_factory.mktemp("taught"))


def test_candidates_that_pass_are_kept_and_the_rest_rejected_with_reasons(taught_model, tmp_path):
    briefs = tmp_path / "briefs.json"
    briefs.write_text(json.dumps(BRIEFS))
    args = self_train.arguments().parse_args(["--base", str(taught_model), "--briefs", str(briefs), "--out",
                                              str(tmp_path / "out"), "--samples", "1", "--temperature", "0"])
    counts = self_train.generate(args, tmp_path / "data", lambda **values: None)
    assert counts["kept"] >= 3 and counts["candidates"] > counts["kept"], counts
    kept = [json.loads(line) for name in ("train", "heldout") for line in (tmp_path / "data" / f"{name}.jsonl").open()]
    assert {record["completion"].split()[0] for record in kept} <= {"The", "A"}, kept
    assert {record["brief"] for record in kept} & {json.loads(line)["brief"]
                                                   for line in (tmp_path / "data" / "heldout.jsonl").open()}
    rejected = [json.loads(line) for line in (tmp_path / "data" / "rejected.jsonl").open()]
    assert rejected and all(record["reason"] for record in rejected)


def test_a_candidate_is_rejected_when_the_filter_cut_more_sentences_than_it_kept():
    task = section_writer.SectionTask("0", "Tides", 30)
    text = "The Moon pulls the sea. Tides rise twice a day. Spring tides are highest. Neap tides are lowest."

    def written(cut: int, **extra) -> section_writer.WrittenSection:
        return section_writer.WrittenSection("0", text, 18, 1, "ok", [("junk", "Blorp.")] * cut, **extra)

    assert self_train.reject_reason(written(4), task) == ""  # 4 cut, 4 kept
    assert self_train.reject_reason(written(5), task) == "more sentences cut (5: junk) than kept (4)"
    assert self_train.reject_reason(section_writer.WrittenSection("0", text, 18, 2, "short"), task) \
        == "off its word budget"


@pytest.mark.slow
def test_the_self_training_job_trains_and_registers_a_staged_writer_adapter(db, taught_model, tmp_path, settings):
    briefs = tmp_path / "briefs.json"
    briefs.write_text(json.dumps(BRIEFS))
    settings.SELF_TRAIN_BRIEFS = briefs
    base = registry.base_model_register(name="taught", path=str(taught_model))
    job = TrainingJob(kind=JobKind.SELF_TRAIN, base_model=base, after=AfterTraining.STAGE,
                      options={"samples": 1, "temperature": 0.0, "steps": 2, "batch_size": 2, "micro_batch": 1})
    job.full_clean()
    job.save()
    training.run(job.pk, poll_s=0.2)  # what the training worker runs for the job
    job.refresh_from_db()
    assert job.status == JobStatus.DONE, job.error
    assert job.role == "writer" and job.step == 2
    adapter = job.adapter
    assert adapter.status == "staged" and adapter.role == "writer"
    assert adapter.metrics["kept"] >= 3 and adapter.metrics["candidates"] > adapter.metrics["kept"]
    assert "eval_loss_after" in adapter.metrics and "kept_share" in job.metrics
    log = (Path(job.output_dir) / "log.txt").read_text()
    assert "training.self_train" in log and str(briefs) in log
