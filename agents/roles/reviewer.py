"""The reviewer: reads the whole article and proposes fixes as suggestions, never edits.

The checks, cheapest first:
- talk about the document (no model): "This section explains..." is proposed for removal;
- repetition (no model): a sentence whose word 4-grams mostly appear in an earlier section is
  proposed for removal, naming the earlier sentence;
- consistency (no model): a word the article spells two ways ("e-mail" and "email", "organise"
  and "organize") is proposed in the spelling it uses most;
- claims (no model): a sentence that states a date, a number or a name which neither the brief
  nor the sources hold, and which cites no passage, is marked "check this" (a small model invents
  them: "the first bicycle back in the year 1760"); people keep it once checked, or remove it;
- as a reader reads (`reader_checks`, when judges are given): talk about the writing found by
  the chatter classifier, words no lexicon knows, sentences far from the brief and their heading;
- transitions (the model): for each section after the first, the model reads the end of the
  section before and the start of this one and writes one sentence linking them, proposed as a
  new opening. All sections go to the engine as one batch. A 135M model writes plenty of junk,
  so a sentence is only proposed when it reads like one: a single sentence of 5 to 35 words, no
  headings, labels or brackets, and not a repeat of what the section already says."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass

from agents import claims, quality
from agents.llm.types import AdapterSpec, CancelCheck, Engine, GenerationRequest
from agents.roles import answers, reader_checks

ROLE = "reviewer"
OVERLAP = 0.6  # share of a sentence's 4-grams found earlier that counts as a repetition
LABEL_SHARE = 0.6  # share of the words before a sentence's colon that, found in one heading, make it a label

SYSTEM = "You are a helpful editor."


@dataclass
class Proposal:
    section_key: str
    original: str  # an exact span of the section's text
    replacement: str
    reason: str
    kind: str = "repetition"


_sentences = reader_checks.sentences


def review_repetition(sections: list[tuple[str, str, str]]) -> list[Proposal]:
    """sections: (key, heading, text) in reading order. A sentence that mostly repeats one of an
    earlier section, or one earlier in its own section (a loop), is proposed for removal."""
    earlier: dict[tuple[str, ...], tuple[str, str]] = {}  # 4-gram -> (heading, sentence)
    proposals = []
    for key, heading, text in sections:
        seen_here: dict[tuple[str, ...], tuple[str, str]] = {}
        for sentence in _sentences(text):
            grams = set(quality.four_grams(sentence))
            if len(grams) >= 3:
                hits = [earlier[g] for g in grams if g in earlier]
                here = [seen_here[g][1] for g in grams if g in seen_here]
                if len(hits) >= OVERLAP * len(grams):
                    where, first = max(set(hits), key=hits.count)
                    proposals.append(Proposal(key, sentence, "", f"Repeats “{first[:120]}” from “{where}”."))
                    continue
                if len(here) >= OVERLAP * len(grams):  # a loop: says again what this section said
                    first = max(set(here), key=here.count)
                    proposals.append(Proposal(key, sentence, "", f"Says again what “{first[:120]}” said above."))
                    continue
            for gram in grams:
                seen_here.setdefault(gram, (heading, sentence))
        for gram, value in seen_here.items():
            earlier.setdefault(gram, value)
    return proposals


# --- talk about the document --------------------------------------------------------------

META = quality.META  # one definition of "talk about the writing", shared with the writers' filter


def review_meta(sections: list[tuple[str, str, str]]) -> list[Proposal]:
    """Sentences about the writing instead of the subject ("This section covers...", "in 200
    words"), a habit of small models: proposed for removal."""
    return [Proposal(key, sentence, "", "Talks about the document instead of its subject.", kind="meta")
            for key, _heading, text in sections for sentence in _sentences(text) if META.search(sentence)]


def review_labels(sections: list[tuple[str, str, str]], topic: str) -> list[Proposal]:
    """Sentences that open with the topic or a heading used as a label ("The Basics: GPS is...",
    "The Silk Road and what travelled along it: The goods traded..."): a small model copying the
    outline into the prose. Proposed for removal (people may keep the words after the colon)."""
    names = [topic] + [heading for _, heading, _ in sections]
    named = [set(quality.words(name)) for name in names if quality.words(name)]
    proposals = []
    for key, _heading, text in sections:
        for sentence in _sentences(text):
            label, colon, rest = sentence.partition(":")
            words = quality.words(label)
            if not colon or not rest.strip() or not 0 < len(words) <= 12:
                continue
            if any(len(set(words) & name) >= LABEL_SHARE * len(set(words)) for name in named):
                proposals.append(Proposal(key, sentence, "", "Opens with a heading used as a label.", kind="meta"))
    return proposals


# --- consistency ---------------------------------------------------------------------------

WORD = re.compile(r"\b[A-Za-z]+(?:-[A-Za-z]+)*\b")


def _spelling_key(word: str) -> str:
    """Words that only differ by hyphens or -ise/-ize (-isation/-ization) share a key."""
    key = word.lower().replace("-", "")
    return re.sub(r"is(e|es|ed|ing|ation|ations)$", r"iz\1", key)


def review_consistency(sections: list[tuple[str, str, str]]) -> list[Proposal]:
    """Propose one spelling for each word the article spells two ways (the commoner one)."""
    forms: dict[str, Counter] = {}
    for _, _, text in sections:
        for word in WORD.findall(text):
            if len(word) >= 4:
                forms.setdefault(_spelling_key(word), Counter())[word.lower()] += 1
    preferred = {}
    for key, counter in forms.items():
        if len(counter) > 1:
            (best, best_count), (_, second_count) = counter.most_common(2)
            if best_count > second_count:  # a tie gives no reason to prefer either
                preferred[key] = best
    proposals = []
    for key, _heading, text in sections:
        for sentence in _sentences(text):
            fixed, changed = sentence, []
            for word in set(WORD.findall(sentence)):
                best = preferred.get(_spelling_key(word))
                if best and word.lower() != best:
                    spelled = best.capitalize() if word[0].isupper() else best
                    fixed = re.sub(rf"\b{re.escape(word)}\b", spelled, fixed)
                    changed.append(f"“{word}” → “{spelled}”")
            if changed:
                proposals.append(Proposal(key, sentence, fixed, "The article spells this another way elsewhere: "
                                          + ", ".join(sorted(changed)) + ".", kind="consistency"))
    return proposals


# --- claims nobody can check ---------------------------------------------------------------

CITED = re.compile(r"\[\d{1,2}\]")  # a writer cites only a passage that supports the sentence (citations.Support)


def review_claims(sections: list[tuple[str, str, str]], known: str) -> list[Proposal]:
    """Sentences stating a date, number or name that `known` (the brief and the sources' text)
    does not hold and no citation backs: proposed for checking, their removal the change offered."""
    proposals, known = [], quality.normalise(known).lower()
    for key, _heading, text in sections:
        for sentence in _sentences(text):
            found = [] if CITED.search(sentence) else claims.unsupported(quality.normalise(sentence), known,
                                                                        lowered=True)
            if found:
                named = ", ".join(f"“{claim}”" for claim in dict.fromkeys(found[:4]))
                proposals.append(Proposal(key, sentence, "", f"{named}: neither the brief nor a source says "
                                          "so. Keep it once checked, or remove it.", kind="claim"))
    return proposals


# --- as a reader reads (classifier, lexicon, embeddings: reader_checks) ----------------------

def review_as_read(sections: list[tuple[str, str, str]], judges: reader_checks.Judges, about: str,
                   known: str) -> list[Proposal]:
    """Talk about the writing found by meaning, words nobody knows, sentences off the brief."""
    allowed = quality.allowed_words(about, known, *[heading for _, heading, _ in sections])
    proposals = [Proposal(key, sentence, "", "Talks about the writing or to the reader, not about the subject.",
                          kind="meta") for key, sentence in reader_checks.chatter_sentences(sections, judges)]
    for key, sentence, unknown in reader_checks.junk_sentences(sections, judges, allowed):
        named = ", ".join(f"“{word}”" for word in dict.fromkeys(unknown[:4]))
        proposals.append(Proposal(key, sentence, "", f"{named}: no word a reader knows. Fix it, or remove the "
                                  "sentence.", kind="junk"))
    proposals += [Proposal(key, sentence, "", "Strays from the brief and from its section's heading.",
                           kind="off-brief") for key, sentence in reader_checks.off_brief_sentences(sections, judges,
                                                                                                    about)]
    return proposals


# --- transitions (the model) ----------------------------------------------------------------

def transition_request(topic: str, before: tuple[str, str], section: tuple[str, str],
                       adapter: AdapterSpec | None) -> GenerationRequest:
    """before and section are (heading, text). Small models answer a plain request best; given
    labelled blocks of text, they copy the labels."""
    ending = (_sentences(before[1]) or [""])[-1]
    user = (f"Write one transition sentence for an article about {topic.strip().rstrip('.')}. The previous part "
            f"ended with: “{ending}” The next part is about {section[0]}.")
    return GenerationRequest(id=f"{ROLE}-{uuid.uuid4().hex[:8]}", adapter=adapter, max_new_tokens=48,
                             repetition_penalty=1.15,
                             messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])


def read_transition(answer: str, section_text: str, heading: str) -> str | None:
    """The model's sentence if it is usable, else None."""
    sentence = answers.first_sentence(answer)
    words = sentence.split()
    if not 5 <= len(words) <= 35 or not re.search(r"[.!?]$", sentence) or not sentence[0].isupper():
        return None
    if re.search(r"[#\[\]{}<>|:]|\b(section|heading|sentence|article|paragraph|transition|hope)\b|^I\b"
                 r"|\b(previous|next) part\b|\d\.$", sentence, re.I) or META.search(sentence):
        return None  # talks about the document or to the editor instead of about its subject, or markup
    if sentence.lower().rstrip(".!?") == heading.lower():
        return None
    grams = set(quality.four_grams(sentence))
    known = set(quality.four_grams(section_text))
    if grams and len(grams & known) >= 0.5 * len(grams):
        return None  # says what the section says already
    return sentence


def review_transitions(engine: Engine, topic: str, sections: list[tuple[str, str, str]],
                       adapter: AdapterSpec | None = None, cancel: CancelCheck | None = None,
                       skip: set[str] | None = None,
                       on_text=None) -> list[Proposal]:
    """sections: (key, heading, text) of the leaves in reading order; `skip` holds keys not to touch
    (pinned text). One batch for the whole article."""
    skip = skip or set()
    requests, targets = [], {}
    for index in range(1, len(sections)):
        key, heading, text = sections[index]
        _, before_heading, before_text = sections[index - 1]
        if key in skip or not _sentences(text) or not _sentences(before_text):
            continue
        request = transition_request(topic, (before_heading, before_text), (heading, text), adapter)
        requests.append(request)
        targets[request.id] = (key, heading, text, before_heading)
    answers = {request.id: "" for request in requests}
    for delta in engine.stream(requests, cancel=cancel):
        answers[delta.request_id] += delta.text
        if on_text and delta.text:
            on_text(delta.text)
    proposals = []
    for request_id, answer in answers.items():
        key, heading, text, before_heading = targets[request_id]
        sentence = read_transition(answer, text, heading)
        if sentence:
            first = _sentences(text)[0]
            proposals.append(Proposal(key, first, f"{sentence} {first}",
                                      f"Leads in from “{before_heading}”.", kind="transition"))
    return proposals


def review(engine: Engine | None, topic: str, sections: list[tuple[str, str, str]],
           adapter: AdapterSpec | None = None, cancel: CancelCheck | None = None,
           skip: set[str] | None = None, on_text=None, known: str | None = None,
           judges: reader_checks.Judges | None = None) -> list[Proposal]:
    """Every check; with no engine, only the ones without the LLM, and with no `judges` only the
    rules. `known` is what the claims may rest on (the brief and the sources; the topic when not
    given). A span gets one proposal at most (the first check that claims it), so accepting one
    never makes another stale."""
    known = topic if known is None else known
    proposals = review_meta(sections) + review_labels(sections, topic) + review_repetition(sections) \
        + review_consistency(sections) + review_claims(sections, known)
    if judges is not None:
        proposals += review_as_read(sections, judges, topic, known)
    if engine is not None:
        proposals += review_transitions(engine, topic, sections, adapter, cancel, skip, on_text)
    kept, claimed = [], set()
    for proposal in proposals:
        if (proposal.section_key, proposal.original) not in claimed:
            claimed.add((proposal.section_key, proposal.original))
            kept.append(proposal)
    return kept
