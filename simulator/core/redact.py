"""Credentials out of every message, log line and stored field: URL passwords, bearer tokens, keys."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

HIDDEN = "***"
_PATTERNS = (
    re.compile(r"(?<=://)([^/\s:@]*):[^/\s@]+@"),  # scheme://user:password@host
    re.compile(r"(?i)(?<=bearer )[^\s,;\"']+"),  # an Authorization header's token
    re.compile(r"(?i)(?<=[?&])((?:api[_-]?key|key|token|access_token|secret|password|sig)=)[^&\s\"']+"),  # in a query
    re.compile(r"\b(?:sk|pk|rk|ghp|gho|ghs|github_pat|xox[abp]|hf)[-_][A-Za-z0-9_\-]{12,}"),  # well-known key shapes
)


def redact(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """`text` with credentials hidden, and each of `secrets` (values known to be secret, e.g. the API key) too:
    `redact('http://me:pw@host/v1')` -> 'http://me:***@host/v1'; `redact('Bearer abc')` -> 'Bearer ***'."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 4:  # a placeholder key such as 'none' is no secret, and would hide words
            text = text.replace(secret, HIDDEN)
    text = _PATTERNS[0].sub(lambda m: f"{m[1]}:{HIDDEN}@", text)
    text = _PATTERNS[1].sub(HIDDEN, text)
    text = _PATTERNS[2].sub(lambda m: m[1] + HIDDEN, text)
    return _PATTERNS[3].sub(HIDDEN, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message, its arguments already filled in."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = redact(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True
