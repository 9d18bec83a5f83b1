"""What every variant of the app under test hands back (``Probe``), and the JWT subject both the
naive variant and the peers read, shared by ``app_under_test.py`` and ``peers.py``."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable


class Probe:
    def __init__(self, flush: Callable[[int], int | None] = lambda expected: None) -> None:
        self.flush = flush


def jwt_sub(authorization: str | None) -> str:
    """The ``sub`` claim of a Bearer JWT, unverified (as the peers' consumer hooks read it)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return ""
    segment = token.split(".")[1]
    try:
        return str(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))).get("sub", ""))
    except (ValueError, binascii.Error):
        return ""
