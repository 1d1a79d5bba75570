"""Whether a server can be reached: one TCP connection with a short timeout.

W&B (`loggers`) and the Hugging Face hub (`hub`) each retry for tens of seconds when their
server cannot be reached; asking first turns that wait into one line at once.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

REACH_TIMEOUT_S = 3.0


def unreachable(url: str, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """None if a TCP connection to `url`'s host and port opens within `timeout` seconds; else
    why not, in a few words."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"cannot reach {host}:{port} ({error.strerror or type(error).__name__})"
    return None
