"""Look-alike usernames (Unicode TR39, "Unicode Security Mechanisms").

Two names that a person cannot tell apart on screen must not be two accounts: Cyrillic "аlice"
beside Latin "alice" lets one pass for the other in an audit entry or an approval. Two checks
run when an account is created (never at login, so an existing name keeps working):

- a name mixing scripts with characters confusable with another script is refused
  (TR39 §5.1 mixed-script detection, through ``confusable_homoglyphs.is_mixed_script`` and
  ``is_confusable``);
- a name whose *skeleton* (TR39 §4) equals an existing account's is refused: the skeleton
  replaces every character by a representative of the characters it can be confused with, so
  "alice", "аlice" and "ɑlice" have one skeleton, and "paypa1" the one of "paypal".

``confusable_homoglyphs`` ships the TR39 confusables data but no skeleton function, and its
data is the mapping made symmetric (a character lists what it may be confused with, in both
directions). The TR39 mapping sends each character to one prototype, so the characters that
map to a prototype, and the prototype, form one class; here each class is represented by its
smallest code point. The string this gives is not TR39's prototype string, but two names have
equal skeletons here exactly when they do under TR39, which is all a uniqueness check needs.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from confusable_homoglyphs import confusables as _data  # type: ignore[import-untyped]  # ships no type hints

# Right-to-left glyphs are stored wrapped in LEFT-TO-RIGHT MARKs for display; not part of them.
_DISPLAY_MARK = "\u200e"
# Script aliases that never make a name "mixed": digits and punctuation (Common) and combining
# marks (Inherited), which Vietnamese letters are built from.
_NEUTRAL_SCRIPTS = ["COMMON", "INHERITED"]


def _glyph(text: str) -> str:
    return text.replace(_DISPLAY_MARK, "")


@lru_cache(maxsize=1)
def _table() -> dict[str, str]:
    """Character → what it stands for in a skeleton (one character, or a sequence for the
    characters that TR39 maps to several, such as "m" → "rn")."""
    parent: dict[str, str] = {}

    def root(char: str) -> str:
        parent.setdefault(char, char)
        while parent[char] != char:
            parent[char] = parent[parent[char]]
            char = parent[char]
        return char

    sequences: dict[str, str] = {}
    for key, glyphs in _data.confusables_data.items():
        source = _glyph(key)
        for entry in glyphs:
            other = _glyph(entry["c"])
            if len(source) == 1 and len(other) == 1:
                a, b = root(source), root(other)
                if a != b:
                    # The smaller code point becomes the root: the class's representative.
                    parent[max(a, b)] = min(a, b)
            elif len(source) == 1 and other:
                sequences[source] = other  # a source is never a prototype (TR39 mapping is idempotent)
    table = {char: root(char) for char in list(parent)}
    for source, sequence in sequences.items():
        table[source] = "".join(table.get(ch, ch) for ch in sequence)
    return table


def skeleton(name: str) -> str:
    """TR39 §4 skeleton: NFD, each character by its class representative, NFD again."""
    table = _table()
    mapped = "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", name))
    return unicodedata.normalize("NFD", mapped)


def mixed_script_confusable(name: str) -> bool:
    """True when ``name`` mixes scripts and holds a character confusable with another one
    (TR39 §5.1; digits, punctuation and combining marks count as no script)."""
    if not _data.is_mixed_script(name, allowed_aliases=_NEUTRAL_SCRIPTS):
        return False
    return bool(_data.is_confusable(name, preferred_aliases=[]))


__all__ = ["mixed_script_confusable", "skeleton"]
