"""The finisher: when every section is written, gives the article its title and its lead (the
short paragraph under the title that tells readers what they will get).

Both are asked for in one batch. The title must read like one (2 to 14 words, one line, no
labels or quotes), else the title comes from the brief's topic. The lead is cut to its budget
at a sentence end like a section; if the model's lead is unusable, the lead names what the
sections cover, built from their headings. The path taken is returned, as for outlines."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass

from agents import quality
from agents.llm.types import AdapterSpec, CancelCheck, Engine, GenerationRequest
from agents.outline import MAX_HEADING_WORDS, Brief
from agents.roles import answers, section_writer

ROLE = "finisher"

SYSTEM = "You are a helpful editor."


@dataclass
class Finish:
    title: str
    lead: str
    title_path: str  # "model" or "fallback"
    lead_path: str


def lead_words(target_words: int) -> int:
    """The lead's budget: about 4% of the article, 25 to 60 words."""
    return max(25, min(60, round(target_words * 0.04)))


def requests(brief: Brief, sections: list[tuple[str, str]], adapter: AdapterSpec | None
             ) -> tuple[GenerationRequest, GenerationRequest]:
    """sections: (heading, text) of the leaves in reading order. Plain one-line requests: a
    small model given the article's text in labelled blocks copies the labels back."""
    topic = brief.topic.strip().rstrip(".")
    readers = f", for {brief.audience}" if brief.audience else ""
    headings = ", ".join(heading for heading, _ in sections[:8])
    words = lead_words(brief.target_words)
    title = GenerationRequest(
        id=f"{ROLE}-title-{uuid.uuid4().hex[:6]}", adapter=adapter, max_new_tokens=24, repetition_penalty=1.15,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": f"Suggest a short, catchy title for an article about: {topic}. "
                                              "Answer with the title only."}])
    lead = GenerationRequest(
        id=f"{ROLE}-lead-{uuid.uuid4().hex[:6]}", adapter=adapter, repetition_penalty=1.15,
        max_new_tokens=math.ceil(words * section_writer.HIGH * section_writer.TOKENS_PER_WORD) + 30,
        min_new_tokens=math.floor(words * 0.7 * section_writer.TOKENS_PER_WORD),
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": f"Write a two-sentence introduction, about {words} words, for an "
                                              f"article about {topic}{readers}. It covers {headings}."}])
    return title, lead


def read_title(answer: str) -> str | None:
    quoted = re.search(r"[\"“]([^\"“”]{6,})[\"”]", answer)  # 'A good title could be "..."'
    line = quoted.group(1) if quoted else (answers.unwrap(answer).splitlines() or [""])[0]
    title = re.sub(r"^\s*(?:#+\s*|\**\s*(?:the\s+)?title\s*:\s*|\d+\.\s+)", "", line, flags=re.I)
    title = title.strip().strip("\"“”'*_ ").rstrip(".").strip()
    words = title.split()
    if not 2 <= len(words) <= MAX_HEADING_WORDS or not re.search(r"[A-Za-z]", title):
        return None
    if re.search(r"[\[\]{}<>|#]|^(sure|here|certainly)\b|\btitle\b", title, re.I):
        return None
    return title


def fallback_title(topic: str) -> str:
    first = re.split(r"(?<=[.!?])\s+|\n", topic.strip(), maxsplit=1)[0].rstrip(".!?")
    words = first.split()[:MAX_HEADING_WORDS]
    title = " ".join(words) or "Untitled article"
    return title[0].upper() + title[1:]


# A sentence about the writing ("This opening sentence sets the stage...") rather than the subject;
# "this article" is fine in a lead.
LEAD_META = re.compile(r"\b(sentences?|paragraphs?|sections?|lead|introduction|words|outline|essay)\b", re.I)


def read_lead(answer: str, words: int) -> str | None:
    """Whole sentences up to 1.3x the budget (one sentence at least); None if unusable."""
    kept: list[str] = []
    for sentence in answers.sentences(" ".join(section_writer.tidy(answers.unwrap(answer), "").split())):
        if kept and section_writer.word_count(" ".join(kept + [sentence])) > 1.3 * words:
            break
        if re.search(r"[.!?][\"')\]]*$", sentence) and not LEAD_META.search(sentence) \
                and not quality.is_meta(sentence):
            kept.append(sentence.strip("\"“”"))
    text = " ".join(kept)
    if not 0.6 * words <= section_writer.word_count(text) <= 2 * words \
            or re.search(r"[#\[\]{}<>|:]|\b(introduction|lead|words)\b", text, re.I):
        return None
    return text


def fallback_lead(brief: Brief, headings: list[str]) -> str:
    named = [h for h in headings if h][:6]
    if not named:
        return f"{fallback_title(brief.topic)}."
    listed = f"{', '.join(named[:-1])} and {named[-1]}" if len(named) > 1 else named[0]
    # A standfirst naming the parts, not a sentence about the article ("This article is about...").
    return f"{fallback_title(brief.topic)}: {listed}."


def finish(engine: Engine, brief: Brief, sections: list[tuple[str, str]], adapter: AdapterSpec | None = None,
           cancel: CancelCheck | None = None, on_text=None) -> Finish:
    title_request, lead_request = requests(brief, sections, adapter)
    answers = {title_request.id: "", lead_request.id: ""}
    for delta in engine.stream([title_request, lead_request], cancel=cancel):
        answers[delta.request_id] += delta.text
        if on_text and delta.text:
            on_text(delta.text)
    title = read_title(answers[title_request.id])
    lead = read_lead(answers[lead_request.id], lead_words(brief.target_words))
    return Finish(title=title or fallback_title(brief.topic),
                  lead=lead or fallback_lead(brief, [heading for heading, _ in sections]),
                  title_path="model" if title else "fallback", lead_path="model" if lead else "fallback")
