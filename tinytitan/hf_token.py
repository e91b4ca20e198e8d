"""The Hugging Face token: read from ``HF_TOKEN`` or the saved login, checked, never shown.

A token pasted with a stray character fails deep inside the HTTP library with an encoding
error that can echo the header; checked here, the error names the variable, not the value.

Whitespace around the token (the newline of ``HF_TOKEN="$(cat token)"`` written as
``echo`` output or a file with a final newline, a Windows ``\\r\\n``) is accepted and dropped:
no token holds whitespace, so nothing can be meant by it. A line break *inside* the value is
refused: huggingface_hub deletes every line break, which would silently glue two lines (two
pasted tokens, a token and a comment) into one token.
"""

from __future__ import annotations

import os

from tinytitan.errors import TinytitanError

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # huggingface_hub's order


def _raw_token() -> tuple[str, str] | None:
    """(where, value) of the token as written, before huggingface_hub cleans it."""
    for name in TOKEN_VARIABLES:
        if os.environ.get(name):
            return name, os.environ[name]
    from huggingface_hub import constants

    try:
        with open(constants.HF_TOKEN_PATH) as f:
            return f"the saved login ({constants.HF_TOKEN_PATH})", f.read()
    except OSError:
        return None


def hub_token() -> str | None:
    """The token for Hub calls, or None when there is none; refuses one that cannot go in an HTTP header."""
    from huggingface_hub import get_token

    token = get_token()  # HF_TOKEN, else the saved login (huggingface_hub strips it and drops line breaks)
    raw = _raw_token()
    if token and raw is not None and any(c in raw[1].strip() for c in "\r\n"):
        raise TinytitanError(
            f"the Hugging Face token in {raw[0]} holds a line break inside it (not shown): set it to the token "
            'alone, one line, e.g. HF_TOKEN="$(head -n 1 token-file)"'
        )
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        raise TinytitanError(
            "the Hugging Face token (HF_TOKEN or the saved login) holds a non-ASCII, space or control character "
            "(not shown): copy it again from https://huggingface.co/settings/tokens"
        )
    return token
