"""The Hugging Face token: read from ``HF_TOKEN`` or the saved login, checked, never shown.

A token pasted with a stray character fails deep inside the HTTP library with an encoding
error that can echo the header; checked here, the error names the variable, not the value.
"""

from __future__ import annotations

from tinytitan.errors import TinytitanError


def hub_token() -> str | None:
    """The token for Hub calls, or None when there is none; refuses one that cannot go in an HTTP header."""
    from huggingface_hub import get_token

    token = get_token()  # HF_TOKEN, else the saved login
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        raise TinytitanError(
            "the Hugging Face token (HF_TOKEN or the saved login) holds a non-ASCII, space or control character "
            "(not shown): copy it again from https://huggingface.co/settings/tokens"
        )
    return token
