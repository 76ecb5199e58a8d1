"""Gateway ids: opaque, unguessable, prefixed (`file-…`, `upload_…`, `part_…`).

An id is its prefix plus 24 characters drawn with `secrets` from [A-Za-z0-9] (~143 bits), so ids
cannot be enumerated and never leak insertion order.
"""

from __future__ import annotations

import re
import secrets
import string

__all__ = ["FILE_PREFIX", "PART_PREFIX", "UPLOAD_PREFIX", "is_well_formed", "new_id"]

FILE_PREFIX = "file-"
UPLOAD_PREFIX = "upload_"
PART_PREFIX = "part_"

_ALPHABET = string.ascii_letters + string.digits
_BODY_LENGTH = 24
_BODY = re.compile(rf"[A-Za-z0-9]{{{_BODY_LENGTH}}}")


_SPACE = len(_ALPHABET) ** _BODY_LENGTH


def new_id(prefix: str) -> str:
    """A fresh random id: `prefix` + 24 characters of [A-Za-z0-9]."""
    # One uniform draw over all 62**24 bodies, written in base 62 (one `secrets` call, not 24).
    number = secrets.randbelow(_SPACE)
    digits = []
    for _ in range(_BODY_LENGTH):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return prefix + "".join(digits)


def is_well_formed(value: str, prefix: str) -> bool:
    """Whether `value` could have been produced by `new_id(prefix)`."""
    return value.startswith(prefix) and _BODY.fullmatch(value, len(prefix)) is not None
