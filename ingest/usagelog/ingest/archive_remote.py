"""The archive's object store: opening it from a URL and an endpoint, and naming its failures.

:class:`~usagelog.ingest.archive.Archive` writes finished files to any fsspec URL. For
``s3://bucket/prefix`` (s3fs) the credentials come from the AWS SDK's usual chain — the
environment variables ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and
``AWS_SESSION_TOKEN``), then ``AWS_PROFILE`` / ``~/.aws``, then an instance role — and the
server from ``USAGELOG_ARCHIVE_ENDPOINT`` (``endpoint``, e.g. ``http://127.0.0.1:8333`` for
MinIO or SeaweedFS; default: AWS itself, or ``AWS_ENDPOINT_URL`` when that is set). This module
reads no environment variable itself: the settings and the AWS SDK do.

Failures of the store are sorted in two, so the worker knows whether to wait or to stop:

- :class:`~usagelog.ingest.errors.ArchiveError` — the store refused the credentials or the
  request (HTTP 403): waiting will not help; the message names the settings to check and never
  shows a secret;
- :class:`~usagelog.ingest.errors.ArchiveUnavailable` — anything else (connection refused, a
  timeout, a 5xx): the store may come back; what was staged stays staged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import fsspec

from .errors import ArchiveError, ArchiveUnavailable

__all__ = ["S3_PROTOCOLS", "check_endpoint", "open_fs", "remote_errors"]

USAGELOG_ARCHIVE_ENDPOINT = "USAGELOG_ARCHIVE_ENDPOINT"
S3_PROTOCOLS = ("s3", "s3a")
_CREDENTIALS = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"


def check_endpoint(target: str, endpoint: str) -> str:
    """Empty string if ``endpoint`` suits ``target``, else the problem (naming the variable)."""
    if not endpoint:
        return ""
    if _protocol(target) not in S3_PROTOCOLS:
        return f"{USAGELOG_ARCHIVE_ENDPOINT} applies to s3:// archive URLs only (the archive is {target!r})"
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return f"{USAGELOG_ARCHIVE_ENDPOINT}={endpoint!r}: expected http(s)://host:port"
    if parsed.username or parsed.password:
        # Never echo it: the part before '@' may be a secret.
        return f"{USAGELOG_ARCHIVE_ENDPOINT}: put no credentials in the endpoint; use {_CREDENTIALS}"
    return ""


def open_fs(target: str, endpoint: str = "") -> tuple[Any, str]:
    """``(filesystem, root path)`` for ``target``; ``endpoint`` is the S3 server's URL."""
    problem = check_endpoint(target, endpoint)
    if problem:
        raise ValueError(problem)
    options: dict[str, Any] = {"endpoint_url": endpoint} if endpoint else {}
    try:
        fs, root = fsspec.core.url_to_fs(target, **options)
    except ImportError as exc:  # s3fs (or gcsfs, adlfs...) missing: fsspec says which
        raise ArchiveError(f"archive {target!r} (USAGELOG_ARCHIVE_URL): {exc}") from None
    return fs, str(root)


def _protocol(target: str) -> str:
    return target.split("://", 1)[0].lower() if "://" in target else "file"


def _is_refusal(exc: BaseException) -> bool:
    """True when the store answered but refused: credentials, signature, permissions."""
    if isinstance(exc, PermissionError):
        return True
    code = getattr(exc, "response", {}) or {}
    code = code.get("Error", {}).get("Code", "") if isinstance(code, dict) else ""
    return code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken")


@contextmanager
def remote_errors(target: str, endpoint: str, doing: str) -> Iterator[None]:
    """Translate the store's exceptions raised inside the block (see the module docstring)."""
    try:
        yield
    except (ArchiveError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        where = f"archive {target}" + (f" at {endpoint}" if endpoint else "")
        # The exception's own text is the server's message (or the client's): it holds neither
        # the secret key nor a signature, but the type and the message are enough to act on.
        detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        if _is_refusal(exc):
            raise ArchiveError(
                f"{where} refused to let this worker {doing} ({detail}); check the credentials in "
                f"{_CREDENTIALS}, the bucket in USAGELOG_ARCHIVE_URL and {USAGELOG_ARCHIVE_ENDPOINT}"
            ) from None
        raise ArchiveUnavailable(f"{where}: could not {doing} ({detail})") from exc
