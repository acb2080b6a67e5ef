"""Offline as soon as the Hugging Face hub is out of reach, instead of minutes of retries.

huggingface_hub retries an unreachable host with back-off (5 tries, 8 s apart, per file): an
offline `arzan estimate` or `arzan eval` spent one to four minutes printing retry warnings before
the one-line error. One TCP connect before the hub libraries are imported tells the difference;
then HF_HUB_OFFLINE=1 makes transformers, datasets and lm-eval read their caches at once, which is
also what a machine with the files cached needs to work at all.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

COMMANDS = {"train", "estimate", "eval", "merge"}  # the ones that may reach the hub
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (1, true, yes, on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def offline_if_unreachable(timeout_s: float = 3.0) -> str | None:
    """Sets HF_HUB_OFFLINE=1 when the hub's host cannot be connected to; returns the note to show.
    Does nothing when the user already chose (HF_HUB_OFFLINE set either way) or when huggingface_hub
    is already imported (it reads the variable once, at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip() != "" or "huggingface_hub" in sys.modules:
        return None
    if any(os.environ.get(v) for v in PROXY_VARS):  # the libraries go out through it; a direct connect proves nothing
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return None
    except OSError as exc:
        os.environ["HF_HUB_OFFLINE"] = "1"
        why = exc.strerror or type(exc).__name__
        return (f"note: {host} cannot be reached ({why}); working offline from the Hugging Face cache "
                "(HF_HUB_OFFLINE=1; set HF_HUB_OFFLINE=0 to make the libraries try anyway)")
