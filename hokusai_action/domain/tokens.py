"""Token ids: what the site accepts as a token's symbol, stored upper-case."""

from __future__ import annotations

import re

from hokusai_action.errors import InputError

# used with fullmatch: "$" would also accept a trailing newline
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MISSING_TOKEN_ID = "Missing token id: pass --token-id or set 'token_id' in hokusai.yaml."
BAD_TOKEN_ID = "Token id '{given}' is not valid: use 1-64 letters, digits, '_' or '-', starting with a letter or digit."


def normalise_token_id(raw: str | None) -> str:
    """``raw`` as the token id the site stores (upper-case); anything else is exit 2."""
    if not raw:
        raise InputError(MISSING_TOKEN_ID)
    if not isinstance(raw, str) or not TOKEN_PATTERN.fullmatch(raw):
        raise InputError(BAD_TOKEN_ID.format(given=raw))
    return raw.upper()
