"""What a reader would not keep, found sentence by sentence: text that echoes the writer's
instructions, talk about the writing instead of its subject, and junk words. The writers cut
these while they stream (`SentenceGate`), the reviewer proposes removing what a person wrote
like that, and `manage.py evaluate` counts them with the same definitions.

- Prompt echo: a sentence that shares a run of ECHO_N words with the instructions a writer was
  given (the brief's topic and the section's own heading excepted: writing about the subject
  repeats its name), or that carries the prompt's formats ("(400 words)", "<<Heading>>").
- Meta: addressing the writer or the reader about the writing ("Here's how you can write...",
  "I hope this helps", "This section covers...", "This article is about...").
- Junk word: a word that is not in the lexicon (the tokenizers' whole words, their inflections
  and two-word compounds) and not in the brief or the sources; "Pharosofreamadefine...".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

ECHO_N = 5  # words in a row shared with the instructions make a sentence an echo

SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")


QUOTES = str.maketrans({"‘": "'", "’": "'", "‛": "'", "′": "'", "`": "'", "“": '"',
                        "”": '"', "„": '"', "«": '"', "»": '"', "–": "-", "—": "-",
                        " ": " ", "…": "..."})


def normalise(text: str) -> str:
    """Text as every check reads it: curly quotes and apostrophes straight, dashes plain ("Here’s
    the revised version:" is "Here's the revised version:")."""
    return (text or "").translate(QUOTES)


def has_words(sentence: str) -> bool:
    """Two words of two letters or more: what a classifier of sentences can judge (a list item's
    "1." or a stray "[2]" is no sentence)."""
    return len(re.findall(r"[^\W\d_]{2,}", sentence)) >= 2


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE.split(text or "") if s and s.strip()]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def four_grams(text: str) -> list[tuple[str, ...]]:
    """The word 4-grams of `text`, lowercased, in order: what repetition is measured by (within a
    text, across sections, against earlier notes)."""
    found = words(text)
    return [tuple(found[i:i + 4]) for i in range(len(found) - 3)]


# --- talk about the writing -----------------------------------------------------------------

META = re.compile(
    # the document and its parts, as such
    r"\b(?:this|the|our|my|each|every|next|previous|your|following) (?:section|article|outline|essay|paragraph|"
    r"editor|draft|version|prompt|instructions?|word count)s?\b"
    r"|\b(?:this|the original|the above|the following|my|the previous) (?:text|content|response|answer|post|blog|"
    r"piece|passage|summary|rewrite)\b|\b(?:this|that|the next|the last) part (?:covers|is|will|of the)\b"
    r"|\b(?:the|this) text (?:has|had|was|is|will)\b|\b(?:been|was|were) (?:edited|revised|rewritten) to\b"
    r"|\b(?:this|that|your|my|each) part\b|\bthis is a part\b|\b(?:another|a separate|a later|an earlier) section\b"
    r"|\b(?:these|the|my|your) sources\b|^it (?:explains|discusses|describes|covers|provides|includes|highlights|"
    r"outlines|summari[sz]es|introduces|presents)\b"
    r"|\bthe main (?:topic|point of (?:this|the) (?:text|piece))\b"
    r"|\b\d+ (?:words|paragraphs|sentences)\b|\bin \d+ words\b"
    # the writer talking about its own writing
    r"|\bI (?:just )?want to\b|\bI suggest\b|\bmy (?:article|work|writing|essay|text|draft)\b"
    r"|\byour (?:own )?writing\b|\bedit(?:ing)? (?:anything|this|my|your)\b"
    r"|\bI(?:'ve| have)? (?:also |then |just )?(?:made|changed|added|removed|edited|rewrote|rewritten|included|"
    r"kept|tried|mentioned|revised|corrected|fixed|simplified|shortened)\b"
    r"|\b(?:we|I)(?:'ll| will| are going to| am going to|'m going to|'re going to| shall) (?:now )?"
    r"(?:tell|cover|discuss|talk|look|explore|explain|"
    r"write|describe|see|learn|start|begin|go)\b"
    r"|\bwe(?:'ve| have) (?:covered|discussed|talked|seen|looked|explored|mentioned)\b"
    r"|\b(?:here'?s|here is) (?:how|what|an? |the |my |your )"
    r"|\bI(?:'ll| will| would) (?:write|start|begin|now)\b|\bas an ai\b|\b(?:you are|you're) (?:writing|asked)\b"
    r"|\bI(?:'d| would) like (?:you|to (?:focus|discuss|talk|write|explain|add|mention))\b"
    r"|\brepeat(?:ing)? (?:yourself|myself|ourselves)\b|\b(?:this|the) topic (?:can|could) be\b"
    r"|\bwhat (?:they|you) are reading\b|\b(?:continue|keep|start|enjoy) reading\b"
    r"|\b(?:an?|the|this) (?:\w+ )?introduction to (?:a|the|this|our) (?:topic|subject)\b"
    r"|\binvitation (?:for|to) (?:the |our )?readers?\b"
    r"|\b(?:in|within) (?:this|the following) (?:piece|text|part|chapter)\b"
    r"|\bwrite (?:the|a|your|this|an?) (?:section|article|paragraph)\b"
    # the text's parts and its author, named (development half of briefs_unseen.json)
    r"|\b(?:this|the|my|our) (?:opening|first|last|final|closing|next|previous|following) (?:paragraph|section|"
    r"sentence|chapter|part)s?\b|\bthis sentence\b|\bthe author (?:explains|describes|discusses|tells|shows|"
    r"writes|wants|argues)\b|\byour readers\b"
    r"|^(?:translat\w*(?: into \w+)?|translation|coming to answer your question)\s*:"
    # talking to the person who asked
    r"|\bI hope (?:this|that|it|you) |\blet (?:me|us) know\b|\bfeel free to\b|\bhappy to help\b"
    r"|\bwhat'?s your (?:take|opinion|view)\b|\bshare (?:it|this|your \w+) with (?:me|us)\b"
    r"|\bany (?:other )?questions\b"
    r"|\bcomment below\b|\bsubscribe\b|\bthanks? (?:you )?for (?:reading|asking)\b"
    r"|^(?:sure|certainly|of course|absolutely|great question|okay|ok)\b[!,.]",
    re.I)


def is_meta(sentence: str) -> bool:
    return bool(META.search(normalise(sentence)))


# --- echoes of the prompt -------------------------------------------------------------------

FORMATS = re.compile(r"\(\s*\d[\d,]*\s*words?\s*\)|<<|>>|\bsection for\b|\*\*\*"
                     r"|(?:^|\s)[#@][A-Za-z]\w+|(?:^|\s)#{1,6}\s|\[(?:insert|your|link|article|source|citation)\b"
                     r"|\b\d{4}-\d\d-\d\dT\d\d"
                     r"|^\s*(?:goal|cover|readers|tone|language|topic|sources?|length|by|posted(?: on)?|written by|"
                     r"author|date|title|heading|word count)\s*:", re.I)


@dataclass
class Instructions:
    """The n-grams of what a writer was told, less those of the subject's own names."""

    grams: set[tuple[str, ...]] = field(default_factory=set)
    n: int = ECHO_N

    @classmethod
    def of(cls, prompt: str, subject: Iterable[str] = (), n: int = ECHO_N) -> Instructions:
        told = set(_ngrams(words(prompt), n))
        for name in subject:
            told -= set(_ngrams(words(name), n))
        return cls(told, n)

    def echoed(self, sentence: str) -> bool:
        sentence = normalise(sentence)
        if FORMATS.search(sentence):
            return True
        return any(gram in self.grams for gram in _ngrams(words(sentence), self.n))


def _ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


# --- junk words -------------------------------------------------------------------------------

SUFFIXES = ("ization", "isation", "ations", "ation", "ments", "ment", "nesses", "ness", "ities", "ity", "ingly",
            "ings", "ing", "ers", "er", "est", "ies", "ied", "ed", "es", "ly", "s", "d", "al", "ally", "ful",
            "less", "ise", "ize", "ised", "ized", "ic", "ism", "ist", "ists", "ive", "able", "ably", "ship", "'s")
PREFIXES = ("un", "re", "in", "im", "dis", "non", "pre", "post", "over", "under", "sub", "super", "inter", "trans",
            "anti", "auto", "co", "de", "mis", "multi", "semi", "mid", "self", "out", "up", "counter", "micro",
            "mega", "bio", "geo", "hyper", "mono", "poly", "tele", "ultra")
WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|')*[^\W\d_]|[^\W\d_]")  # letters of any script, inner apostrophes


class Lexicon:
    """Words a model could mean: whole words of the tokenizers' vocabularies, with inflections,
    common prefixes and compounds of two known words ("lighthouses", "containerization",
    "seaborne")."""

    def __init__(self, known: Iterable[str]):
        self.known = frozenset(w.lower() for w in known if len(w) > 1 or w in "ai")

    @classmethod
    def from_vocabularies(cls, *vocabularies: Iterable[str]) -> Lexicon:
        found = set()
        for vocabulary in vocabularies:
            for token in vocabulary:
                word = token[1:] if token[:1] in ("Ġ", "▁") else token  # byte-level / sentencepiece word starts
                if word.isalpha() and word.isascii():
                    found.add(word.lower())
        return cls(found)

    @functools.lru_cache(maxsize=65536)  # noqa: B019  (one lexicon per process; words repeat)
    def knows(self, word: str, depth: int = 0) -> bool:
        if depth == 0 and (word.isupper() or any(ch.isupper() for ch in word[1:]) or not word.isascii()):
            return True  # an acronym, a name in CamelCase ("PEFT", "SymPy"), a word of another language
        word = re.sub(r"'(?:s|t|ve|ll|re|d|m)$", "", word.lower().strip("'"))
        word = word[:-1] if word.endswith("n") and word[:-1] in ("don", "isn", "won", "didn", "doesn", "wasn",
                                                                 "aren", "couldn", "wouldn", "shouldn") else word
        if len(word) <= 3 or word in self.known:
            return True
        for suffix in SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                stem = word[:-len(suffix)]
                if stem in self.known or stem + "e" in self.known or (suffix in ("ies", "ied") and stem + "y" in
                                                                          self.known):
                    return True
                if len(stem) > 3 and stem[-1] == stem[-2] and stem[:-1] in self.known:  # "stopped"
                    return True
        if depth == 0:
            for prefix in PREFIXES:
                if word.startswith(prefix) and len(word) - len(prefix) >= 4 and self.knows(word[len(prefix):], 1):
                    return True
            for cut in range(3, len(word) - 2):  # two known words run together, each of 3 letters or more
                if word[:cut] in self.known and self.knows(word[cut:], 1):
                    return True
        return False

    def junk(self, text: str, allowed: frozenset[str] = frozenset()) -> list[str]:
        """The words of `text` this lexicon does not know and `allowed` (the brief's and the
        sources' words, lowercased) does not hold."""
        return [w for w in WORD.findall(text) if w.lower() not in allowed and not self.knows(w)]


def allowed_words(*texts: str) -> frozenset[str]:
    return frozenset(w.lower() for text in texts for w in WORD.findall(text or ""))


@functools.cache
def default_lexicon() -> Lexicon:
    """An English word list (pyspellchecker's, 160,000 words), the embedding model's WordPiece
    vocabulary (always installed: retrieval needs it) and, where the bundled model is installed,
    its tokenizer's whole words."""
    from spellchecker import SpellChecker
    from transformers import AutoTokenizer

    from agents.retrieval import embedding_model_dir

    vocabularies = [SpellChecker(language="en").word_frequency.dictionary.keys(),
                    AutoTokenizer.from_pretrained(embedding_model_dir()).get_vocab()]
    try:
        from agents.llm.bundled import bundled_tokenizer_vocabulary
        vocabularies.append(bundled_tokenizer_vocabulary())
    except Exception:  # noqa: BLE001  (the bundled model is optional: any other model may serve)
        pass
    return Lexicon.from_vocabularies(*vocabularies)


# --- one sentence, all checks ---------------------------------------------------------------

KINDS = frozenset({"echo", "meta", "junk", "off-brief"})


@dataclass
class Checks:
    """Everything a sentence of one section is judged against (the defects in `kinds`)."""

    instructions: Instructions = field(default_factory=Instructions)
    lexicon: Lexicon | None = None
    allowed: frozenset[str] = frozenset()
    cite: Callable[[str], str] | None = None  # citations by support (citations.Support.cite)
    on_brief: Callable[[str], bool] | None = None  # OnBrief: the sentence is about the brief's subject
    kinds: frozenset[str] = KINDS
    chatter: Callable[[str], bool] | None = None  # the embedding classifier of talk about the writing (chatter.py)

    def keep(self, sentence: str) -> str:
        """A sentence that passed, as it is shown: with its citations checked."""
        return self.cite(sentence) if self.cite is not None else sentence

    def defect(self, sentence: str) -> str | None:
        """"echo", "meta", "junk", "off-brief" or None (only the kinds checked)."""
        sentence = re.sub(r"^\s*(?:\[\d{1,2}\]\s*)+", "", normalise(sentence))  # a citation first is no start
        kinds = self.kinds
        if "echo" in kinds and self.instructions.echoed(sentence):
            return "echo"
        if "junk" in kinds and (not FULL_SENTENCE.match(sentence) or LOWERCASE_START.match(sentence)
                                or not has_words(sentence) or "\n" in sentence.strip()
                                or BRACKETED_WORDS.search(sentence)):
            return "junk"  # a fragment ("including the Tower of..."), a stray number, a list or heading line,
            # words in brackets ("[Folio] [furthermore]"; citations are numbers)
        if "meta" in kinds and (is_meta(sentence) or (self.chatter is not None and self.chatter(sentence))):
            return "meta"
        if "junk" in kinds and self.lexicon is not None and self.lexicon.junk(sentence, self.allowed):
            return "junk"
        if "off-brief" in kinds and self.on_brief is not None and not self.on_brief(sentence):
            return "off-brief"
        return None

    def recite(self, text: str) -> str:
        """`text` with every sentence's citations checked again (after the text was tidied and
        cut to length, which can change a sentence)."""
        if self.cite is None:
            return text
        paragraphs = []
        for paragraph in re.split(r"\n\s*\n", text or ""):
            cited = [self.cite(sentence) for sentence in sentences(paragraph)]
            cited = [sentence for sentence in cited if re.search(r"[^\W\d_]", sentence)]  # not a lone "[2]!"
            if cited:
                paragraphs.append(" ".join(cited))
        return "\n\n".join(paragraphs)

    def clean(self, text: str, on_cut: Callable[[str, str], None] | None = None) -> str:
        """`text` without its defective sentences, paragraphs kept."""
        paragraphs = []
        for paragraph in re.split(r"\n\s*\n", text or ""):
            kept = []
            for sentence in sentences(paragraph):
                kind = self.defect(sentence)
                if kind is None:
                    kept.append(self.keep(sentence))
                elif on_cut is not None:
                    on_cut(kind, sentence)
            if kept:
                paragraphs.append(" ".join(kept))
        return "\n\n".join(paragraphs)


# A sentence starts with a capital letter, a digit or a quote and holds at least two words.
FULL_SENTENCE = re.compile(r"^[\"'“‘(\[]*(?:[^\W\d_]|\d)(?!\S*\s*$)", re.S)
BRACKETED_WORDS = re.compile(r"\[[^\]\d\s][^\]]*\]")
LOWERCASE_START = re.compile(r"^[\"'“‘(\[]*[a-z]")

OFF_BRIEF = 0.15  # cosine to the brief below which a sentence is off it (bench/calibrate.py)


class OnBrief:
    """Whether a sentence is about the brief: the cosine of its MiniLM embedding to the brief's
    (topic and notes) or to its own section's (heading and goal) clears OFF_BRIEF. Short
    sentences ("It did.") are given the benefit of the doubt."""

    def __init__(self, anchors: list[str], embed: Callable, threshold: float = OFF_BRIEF):
        self.embed, self.threshold = embed, threshold
        self.anchors = embed([a for a in anchors if a.strip()] or [" "])

    def __call__(self, sentence: str) -> bool:
        text = re.sub(r"\s*\[\d{1,2}\]", "", sentence)
        return len(text.split()) < 6 or float((self.anchors @ self.embed([text])[0]).max()) >= self.threshold


class SentenceGate:
    """Streams a writer's text sentence by sentence: a finished sentence goes out unless it has a
    defect (then it is dropped and the writing goes on); the sentence under way is held back.
    `feed(piece)` returns what may be shown now; `close()` the rest, checked too."""

    def __init__(self, checks: Checks):
        self.checks, self.held = checks, ""
        self.cut: list[tuple[str, str]] = []

    def feed(self, piece: str) -> str:
        if not self.checks.kinds and self.checks.cite is None:
            return piece  # nothing to check: every token goes out as it comes
        self.held += piece
        ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*\s+|\n\s*\n", self.held)]
        if not ends:
            return ""
        ready, self.held = self.held[:ends[-1]], self.held[ends[-1]:]
        return self._pass(ready)

    def close(self) -> str:
        rest, self.held = self.held, ""
        return self._pass(rest)

    def _pass(self, text: str) -> str:
        out: list[str | None] = []
        for part in re.split(r"((?<=[.!?])[\"')\]]*\s+|\n\s*\n)", text):
            if not part:
                continue
            if not part.strip():  # the spacing between sentences: kept unless its sentence went
                if out and out[-1] is not None:
                    out.append(part)
                continue
            kind = self.checks.defect(part)
            if kind is None:
                out.append(self.checks.keep(part))
            else:
                self.cut.append((kind, part.strip()))
                out.append(None)
        return "".join(p for p in out if p is not None)
