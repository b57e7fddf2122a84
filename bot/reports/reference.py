"""Reference codes: what a reporter is given and staff type, e.g. `K7FQ-3QXM-9PTA`.

Twelve Crockford base-32 characters (60 random bits) in three groups of four. Crockford's
alphabet leaves out I, L, O and U, so a code read aloud or copied by hand survives: typed input
is normalised (case, I/L -> 1, O -> 0, spaces and dashes) before lookup.
"""

from __future__ import annotations

import re
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
_LOOSE = re.compile(r"[0-9A-Za-z]{4}[-\s]?[0-9A-Za-z]{4}[-\s]?[0-9A-Za-z]{4}")
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})


def new_reference() -> str:
    chars = "".join(secrets.choice(ALPHABET) for _ in range(12))
    return f"{chars[0:4]}-{chars[4:8]}-{chars[8:12]}"


def normalise_reference(typed: str) -> str | None:
    """The canonical code for what someone typed, or None if it cannot be one."""
    compact = re.sub(r"[\s-]", "", typed).upper().translate(_CONFUSABLE)
    if len(compact) != 12 or any(c not in ALPHABET for c in compact):
        return None
    return f"{compact[0:4]}-{compact[4:8]}-{compact[8:12]}"


def find_reference(text: str) -> str | None:
    """The first reference code mentioned in free text, if any."""
    for match in _LOOSE.finditer(text):
        ref = normalise_reference(match.group(0))
        if ref is not None:
            return ref
    return None
