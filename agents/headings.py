"""What a heading is: a short noun phrase. Not a sentence or a fragment of one ("... is not an
easy task and it requires great"), not an instruction ("To have patience and perseverance in
order to achieve this", "Explain the tides"), not a label ("Section 2:", "Title", "(1 of 2)").

`heading_problem` says what is wrong with a heading (None for a good one); `as_heading` repairs
what can be repaired (labels stripped, an instruction made a gerund phrase, a trailing clause
cut). The chief editor keeps only headings that pass, and `manage.py evaluate` scores outlines
with the same rules (heading quality: the share that pass)."""

from __future__ import annotations

import re

MAX_WORDS = 8

LABEL = re.compile(r"^\s*(?:(?:section|part|chapter|step|heading|title|topic|subsection)\s*(?:\d+|[ivx]+)?"
                   r"(?:\.\d+)*\s*[:.)-]\s*|(?:\d+(?:\.\d+)*|[ivx]+)[.):]\s+)", re.I)
NUMBERED_PART = re.compile(r"\s*\(\s*(?:part\s+)?\d+\s*(?:of|/)\s*\d+\s*\)\s*$|\s*[-:]\s*part\s+\d+\s*$", re.I)
PLACEHOLDER = re.compile(r"^(?:title|heading|section|subsection|part|chapter|topic|introduction to the article|"
                         r"untitled|\.\.\.|tbd|n/a|none|key points?|goal|summary of the article)$", re.I)
PRONOUNS = {"i", "we", "you", "he", "she", "it", "they", "this", "these", "those", "that", "my", "our", "your",
            "me", "us", "them", "let's", "lets", "there", "here"}
# Words a noun phrase does not hold: finite verbs of a clause and the words that open one.
CLAUSE = re.compile(r"\b(?:is|are|was|were|be|been|being|am|has|have|had|will|would|can|could|should|must|"
                    r"may|might|shall|does|do|did|requires?|needs?|makes?|helps?|means|becomes?|"
                    r"which|who|whom|whose|because|although|though|since|unless|so that|in order to|"
                    r"if|when|whether|while|where)\b", re.I)
# Verbs that open an instruction ("Explain the tides", "Learn to ride"): made gerunds by as_heading.
IMPERATIVES = {"explain", "describe", "show", "tell", "trace", "compare", "introduce", "discuss", "learn", "make",
               "build", "find", "choose", "use", "get", "have", "keep", "take", "plan", "start", "understand",
               "know", "write", "create", "prepare", "avoid", "try", "give", "set", "pick", "cover", "explore",
               "consider", "remember", "think", "follow", "stay", "add", "mix", "fold", "shape", "bake", "fix",
               "check", "see", "look", "read", "visit", "travel", "pack", "drive", "manage", "price", "store",
               "protect", "improve", "reduce", "increase", "practise", "practice", "study", "discover", "identify",
               "define", "outline", "present", "summarize", "summarise", "sum", "list", "enjoy", "save", "grow",
               "water", "walk", "run", "ride", "cook", "eat", "drink", "sleep", "talk", "speak", "listen", "go"}
WH = {"how", "why", "what", "when", "where", "which", "who"}
DANGLING = {"a", "an", "the", "to", "of", "from", "and", "or", "its", "their", "his", "her", "that", "which", "is",
            "are", "great", "very", "some", "but"}  # "for", "with"... may end a heading ("Things to look out for")
# These end a heading only after a gerund ("Checking in", "Knowing why"); after anything else a
# phrase was cut ("What to do if you get lost in", "Hiking in the Highlands and how").
DANGLING_UNLESS_GERUND = {"in", "on", "at", "into", "onto", "how", "why", "what", "when", "where", "whether", "if",
                          "than"}


def _dangles(words: list[str]) -> bool:
    last = words[-1].lower().strip(".,") if words else ""
    if last in DANGLING:
        return True
    return last in DANGLING_UNLESS_GERUND and not (len(words) > 1 and words[-2].lower().endswith("ing"))


def heading_problem(heading: str) -> str | None:
    """Why `heading` is no heading, or None."""
    text = (heading or "").strip()
    words = re.findall(r"[A-Za-z0-9'’-]+", text)
    if len(words) < 1 or sum(ch.isalpha() for ch in text) < 3:
        return "not text"
    if LABEL.match(text) or NUMBERED_PART.search(text):
        return "a label ('Section N:', '(1 of 2)')"
    if PLACEHOLDER.match(text.strip(" .:")):
        return "a placeholder"
    if len(words) > MAX_WORDS:
        return f"longer than {MAX_WORDS} words"
    first = words[0].lower()
    if first in PRONOUNS:
        return "starts with a pronoun"
    if first == "to" or first in IMPERATIVES:
        return "an instruction, not a name"
    if first in WH:  # "How tides work", "What happens when a link breaks": a question's subject
        if len(words) < 3:
            return "a fragment"
    elif CLAUSE.search(text):
        return "a clause, not a noun phrase"
    if _dangles(words):
        return "ends mid-phrase"
    if re.search(r"[.!?]$", text) or text.count(",") > 1:
        return "a sentence"
    return None


def _gerund(verb: str) -> str:
    verb = verb.lower()
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")) and verb not in ("be",):
        return verb[:-1] + "ing"
    if (len(verb) <= 4 and len(verb) >= 3 and verb[-1] not in "aeiouwxy" and verb[-2] in "aeiou"
            and verb[-3] not in "aeiou"):
        return verb + verb[-1] + "ing"  # plan -> planning, run -> running, get -> getting
    return verb + "ing"


def as_heading(text: str) -> str:
    """`text` made a heading where it can be: labels and numbering stripped, an instruction made a
    gerund phrase ("To have patience" -> "Having patience"), a trailing clause cut ("Riding a
    bike is not an easy task" -> "Riding a bike"), dangling words dropped. The result may still
    have a problem (check it with heading_problem)."""
    text = re.sub(r"[*_`#>\"“”]+", "", text or "")
    text = re.sub(r"\s+", " ", text).strip(" -–—:;,.")
    for _ in range(2):
        text = LABEL.sub("", text).strip(" -–—:;,.")
    text = NUMBERED_PART.sub("", text).strip(" -–—:;,.")
    words = text.split()
    infinitive = False
    if words and words[0].lower() == "how" and len(words) > 2 and words[1].lower() == "to":
        words, infinitive = words[2:], True  # "How to make bread" -> "Making bread"
    elif words and words[0].lower() == "to" and len(words) > 1:
        words, infinitive = words[1:], True
    if words and len(words) > 1 and (infinitive or words[0].lower() in IMPERATIVES):
        words[0] = _gerund(words[0])
    text = " ".join(words)
    clause = CLAUSE.search(text) if text.split()[:1] and text.split()[0].lower() not in WH else None
    if clause and len(text[:clause.start()].split()) >= 2:
        text = text[:clause.start()]
    text = re.split(r",|;| - | – ", text)[0]
    words = text.split()
    while _dangles(words):
        words.pop()
    words = words[:MAX_WORDS]
    while _dangles(words):
        words.pop()
    text = " ".join(words).strip(" .,:;")
    return text[:1].upper() + text[1:]


def quality(headings: list[str]) -> float:
    """The share of `headings` that are headings (0-100); 100 for none."""
    if not headings:
        return 100.0
    return 100 * sum(heading_problem(h) is None for h in headings) / len(headings)
