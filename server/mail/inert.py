"""Requester-chosen text as a mail shows it: in a form that no mail client makes a link.

Mail clients (webmail and desktop alike) turn text that looks like a URL, a domain or an
address into a link, in the text part and in the text of the HTML part; HTML-escaping does not
stop them. A device name such as "https://evil.test/l#attempt_id=x" would then be a link in a
genuine, signed login mail (SPEC.md §2.3, §7.3). Every such link needs one of a small set of
separators: a scheme's ":", a host's dot (the ASCII one or any other that IDNA or a client
reads as one), a path's "/" or "\\", an address's "@". So the text is rebuilt from an allowed
character class without them, and every other character becomes a space, which ends a link in
every autolinker and reads as no dot:

- printable ASCII except `.`, `:`, `/`, `\\` and `@`;
- letters, numbers, currency and other symbols (emoji), dashes, brackets and quotation marks
  from the rest of Unicode, each only if its compatibility form (NFKC) brings in nothing
  refused: "⒈" is "1." and "℀" is "a/c" under NFKC, as some hosts and clients read them;
- combining marks directly after a character kept (one after a space could pass for a dot);
- any space character, as one ASCII space.

Other punctuation, the dot-like characters among it (U+3002, U+FF0E, U+FF61, U+2024,
U+00B7), mathematical signs, controls and format characters (bidi controls, zero-width
characters) are all outside the class. Runs of spaces become one; text with nothing kept is no
text.

Mail apps on phones also make a `tel:` link of a phone number. A run of digits, spaces,
hyphens, brackets and "+" that holds seven digits or more (the shortest numbers dialled with
their area code) has each of its digits shown as "#".
"""

from __future__ import annotations

import re
import unicodedata

# The separators of schemes, hosts, paths and addresses.
_REFUSED_ASCII = frozenset(".:/\\@")
_KEPT_CATEGORIES = frozenset(
    {"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No", "Sc", "So", "Pd", "Ps", "Pe", "Pi", "Pf"}
)
_MARKS = frozenset({"Mn", "Mc", "Me"})
# Emoji skin-tone modifiers: symbols of category Sk, which is otherwise left out.
_EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)
# What a phone's mail app could dial: digits (of any script) joined by separators of numbers.
_NUMBER_RUN = re.compile(r"\d[\d \-()+]*")
_DIALLABLE_DIGITS = 7


def _allowed(char: str) -> bool:
    if char.isascii():
        return char.isprintable() and char not in _REFUSED_ASCII
    category = unicodedata.category(char)
    return category in _KEPT_CATEGORIES or category in _MARKS or ord(char) in _EMOJI_MODIFIERS


def _kept(char: str) -> bool:
    """A character that is allowed, and stays free of separators under NFKC."""
    if not _allowed(char):
        return False
    compatible = unicodedata.normalize("NFKC", char)
    return all(_allowed(part) or part == " " for part in compatible)


def inert_text(value: str) -> str:
    """`value` with every character outside the allowed class as a space, runs of spaces as
    one and none at either end: "" when nothing is left."""
    kept: list[str] = []
    after_kept = False
    for char in value:
        category = unicodedata.category(char)
        if category in _MARKS:
            if after_kept and _kept(char):
                kept.append(char)
                continue
        elif category != "Zs" and _kept(char):
            kept.append(char)
            after_kept = True
            continue
        kept.append(" ")
        after_kept = False
    return _NUMBER_RUN.sub(_undiallable, " ".join("".join(kept).split()))


def _undiallable(run: re.Match[str]) -> str:
    text = run.group()
    if sum(char.isdecimal() for char in text) < _DIALLABLE_DIGITS:
        return text
    return "".join("#" if char.isdecimal() else char for char in text)
