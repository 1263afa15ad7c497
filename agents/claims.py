"""Claims a reader would want checked: sentences that state a date, a number or a name. Without
sources a small model invents them ("the first bicycle back in the year 1760"); a claim counts as
supported only where the brief or a source passage holds the same figure or name, or a passage
supports the sentence as a whole (citations.Support's threshold)."""

from __future__ import annotations

import re
from collections.abc import Callable

NUMBER = re.compile(r"\b\d[\d,.]*(?:st|nd|rd|th|s)?\b")  # "1760", "2,000", "the 17th", "the 1760s"
NAME = re.compile(r"(?<=[a-z,;] )(?:[A-Z][a-z]+(?: (?:of |de |da |van |von )?[A-Z][a-z]+)*)")
# Capitalised, but no claim.
COMMON = {"Moon", "Sun", "Earth", "Internet", "English", "God", "January", "February", "March", "April", "May", "June",
          "July", "August", "September", "October", "November", "December", "Monday", "Tuesday", "Wednesday",
          "Thursday", "Friday", "Saturday", "Sunday"}


def claims(sentence: str) -> list[str]:
    """The figures and names `sentence` states (not a citation mark, not a list item's number,
    not a name that starts it)."""
    text = re.sub(r"\[\d{1,2}\]|^\s*\d{1,2}[.)](?=\s|$)", "", sentence)  # citations, a list item's number
    found = NUMBER.findall(text) + [name for name in NAME.findall(text) if name not in COMMON]
    return [claim.strip(",.") for claim in found if claim.strip(",.")]


def unsupported(sentence: str, known_text: str, supports: Callable[[str], bool] | None = None,
                lowered: bool = False) -> list[str]:
    """The claims of `sentence` that neither `known_text` (the brief and the sources; already in
    lower case if `lowered`, which saves lowering many megabytes of sources per sentence) holds
    nor a source passage supports (`supports(sentence)`)."""
    found = claims(sentence)
    if not found:
        return []
    if supports is not None and supports(sentence):
        return []
    known = known_text if lowered else known_text.lower()
    return [claim for claim in found if claim.lower() not in known]
