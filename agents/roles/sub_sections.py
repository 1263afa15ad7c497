"""The chief editor's second look at a plan: a section too long for one writer is planned as
sub-sections, each with a heading of its own and a goal, asked of the model (one batch for all
such sections) rather than cut into numbered parts."""

from __future__ import annotations

import uuid

from agents.llm.types import AdapterSpec, Engine, GenerationRequest
from agents.outline import Brief, InvalidOutline, PlannedSection, _distribute, parse_outline
from agents.roles.chief_editor import ROLE, SYSTEM, Embed, brief_text, different, named, outline_schema, uncut


def parts_request(brief: Brief, section: PlannedSection, parts: int,
                  adapter: AdapterSpec | None) -> GenerationRequest:
    """Ask for the sub-sections of one section too long for one writer: `parts` headings with goals."""
    user = (f"Plan the sub-sections of one section of an article.\n{brief_text(brief)}\nThe section: "
            f"{section.heading}" + (f" ({section.goal})" if section.goal else "") +
            f"\n\nGive exactly {parts} sub-sections, each on a different part of \"{section.heading}\", in reading "
            "order. For each: a short heading (a noun phrase), a goal and key points. Answer in JSON: "
            '{"sections": [{"heading": "...", "goal": "...", "key_points": ["..."]}]}')
    guide = {"type": "json_schema", "json_schema": {"name": "parts", "schema": outline_schema(parts, parts)}}
    return GenerationRequest(id=f"{ROLE}-parts-{uuid.uuid4().hex[:8]}", adapter=adapter, max_new_tokens=120 * parts,
                             response_format=guide,
                             repetition_penalty=1.1,
                             messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])


def plan_parts(engine: Engine, brief: Brief, sections: list[PlannedSection], max_words: int,
               adapter: AdapterSpec | None = None, embed: Embed | None = None) -> None:
    """Sub-sections, planned by the model, for every leaf over `max_words` (one batch): each part
    a heading of its own (no repeat of another part's, nor of its parent's) with its goal, the
    budget shared out. A leaf whose answer gives too few such parts is left to
    outline.split_for_writers (its key points, or whole)."""
    long = [leaf for section in sections for leaf in section.leaves() if leaf.words > max_words]
    if not long:
        return
    if embed is None:
        from agents.retrieval import default_embedder
        embed = default_embedder().embed
    wanted = [-(-leaf.words // max_words) for leaf in long]
    batch = [parts_request(brief, leaf, count, adapter) for leaf, count in zip(long, wanted, strict=True)]
    answers = {request.id: "" for request in batch}
    try:
        for delta in engine.stream(batch):
            answers[delta.request_id] += delta.text
    except Exception:  # noqa: BLE001  (the deterministic split is the fallback)
        return
    for leaf, count, request in zip(long, wanted, batch, strict=True):
        try:
            offered = named([uncut(part) for part in parse_outline(answers[request.id])])
        except InvalidOutline:
            continue
        parts: list[PlannedSection] = []
        for part in offered:  # not its parent's heading again, nor a near-duplicate of another part's
            if part.heading.lower() != leaf.heading.lower():
                parts += different(parts, [part], embed)
        if len(parts) < count:
            continue
        parts = parts[:count]
        for part, words in zip(parts, _distribute(leaf.words, [1] * count, 1), strict=True):
            part.words, part.children = words, []
        leaf.children = parts
