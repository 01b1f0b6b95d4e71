"""Map Azure SDK / HTTP failures to the typed RemoteError classes, without leaking secrets.

SDK exception texts can carry the request URL (with a SAS `sig=`), the service's "MAC signature
found in the HTTP request" echo, or connection-string fragments. We never chain the SDK exception
(`raise ... from None`) and build our own one-line message from the error code, the status and a
scrubbed first line of the service message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from remote.base import (
    AlreadyExists,
    AuthFailed,
    InvalidName,
    LeaseConflict,
    NotEmpty,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    QuotaExceeded,
    ReadOnlyOnShare,
    RemoteError,
    Throttled,
    Transient,
)

# Error code -> class. Codes not listed fall back to the HTTP status (see `_by_status`).
CODE_MAP: dict[str, type[RemoteError]] = {
    "ResourceNotFound": NotFound,
    "ParentNotFound": NotFound,
    "ShareNotFound": NotFound,
    "ShareSnapshotNotFound": NotFound,
    "ShareBeingDeleted": NotFound,
    "ResourceAlreadyExists": AlreadyExists,
    "ShareAlreadyExists": AlreadyExists,
    "ResourceTypeMismatch": AlreadyExists,
    "DirectoryNotEmpty": NotEmpty,
    "AuthenticationFailed": AuthFailed,
    "InvalidAuthenticationInfo": AuthFailed,
    "NoAuthenticationInformation": AuthFailed,
    "AuthorizationFailure": PermissionDenied,
    "AuthorizationPermissionMismatch": PermissionDenied,
    "AuthorizationResourceTypeMismatch": PermissionDenied,
    "AuthorizationServiceMismatch": PermissionDenied,
    "AuthorizationProtocolMismatch": PermissionDenied,
    "AuthorizationSourceIPMismatch": PermissionDenied,
    "InsufficientAccountPermissions": PermissionDenied,
    "ReadOnlyAttribute": ReadOnlyOnShare,
    "CannotDeleteFileOrDirectory": PermissionDenied,
    "ShareSnapshotOperationNotSupported": PermissionDenied,
    "ShareDisabled": PermissionDenied,
    "SharingViolation": LeaseConflict,
    "FileLockConflict": LeaseConflict,
    "DeletePending": LeaseConflict,
    "ConditionNotMet": PreconditionFailed,
    "ServerBusy": Throttled,
    "OperationTimedOut": Transient,
    "InternalError": Transient,
    "InvalidResourceName": InvalidName,
    "InvalidFileOrDirectoryPathName": InvalidName,
    "OutOfRangeInput": InvalidName,
    "ShareSizeLimitReached": QuotaExceeded,
}


def class_for(code: str | None, status: int | None) -> type[RemoteError]:
    if code:
        if code in CODE_MAP:
            return CODE_MAP[code]
        if code.startswith("Lease"):  # LeaseIdMissing, LeaseIdMismatch…, LeaseAlreadyPresent…
            return LeaseConflict
    return _by_status(status)


def _by_status(status: int | None) -> type[RemoteError]:
    if status is None:
        return RemoteError
    if status in (429, 503):
        return Throttled
    if status >= 500 or status == 408:
        return Transient
    if status == 401:
        return AuthFailed
    if status == 403:
        return PermissionDenied
    if status == 404:
        return NotFound
    if status == 409:
        return AlreadyExists
    if status == 412:
        return PreconditionFailed
    return RemoteError


# ----------------------------------------------------------------------------- scrubbing

_PATTERNS = [
    (re.compile(r"(?i)(signature found in the HTTP request ')[^']*'"), r"\1REDACTED'"),
    (re.compile(r"(?i)(\bsig=)[^&\s'\"<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedKey(?:Lite)?\s+[^:\s]+:)[^\s'\"]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(Bearer\s+)[^\s'\"]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"), r"\1REDACTED"),
    (
        re.compile(
            r"(?i)(Authorization['\"]?\s*[:=]\s*['\"]?)(?!SharedKey|Bearer|REDACTED)[^\s'\"]+"
        ),
        r"\1REDACTED",
    ),
]


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove keys, SAS signatures and Authorization values from a message."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            for form in {secret, quote(secret, safe=""), quote(secret)}:
                text = text.replace(form, "REDACTED")
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class ScrubFilter(logging.Filter):
    """Rewrites log records of HTTP libraries so SAS signatures and keys never reach a handler
    (urllib3 logs every request line, SAS query included, at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_SCRUBBED_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.util.retry",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.core.pipeline.transport._requests_basic",
    "azure.storage.fileshare._shared.policies",
    "azure.storage.common.storageclient",
)
_filter = ScrubFilter()


def install_log_scrubber() -> None:
    """Attach the scrubbing filter to the loggers that can see URLs and headers (idempotent)."""
    for name in _SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)


# ----------------------------------------------------------------------------- translation


def error_code(err: BaseException) -> str | None:
    code = getattr(err, "error_code", None)
    if code:
        return str(getattr(code, "value", code))
    response = getattr(err, "response", None)
    if response is not None:
        try:
            return response.headers.get("x-ms-error-code")
        except Exception:  # pragma: no cover - odd response objects
            return None
    return None


def _status(err: BaseException) -> int | None:
    status = getattr(err, "status_code", None)
    if status is None:
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
    return status


def _first_line(err: BaseException) -> str:
    msg = getattr(err, "reason", None) if isinstance(err, HttpResponseError) else None
    text = str(getattr(err, "message", None) or err)
    line = text.strip().splitlines()[0] if text.strip() else ""
    if msg and msg not in line:
        line = f"{msg}: {line}" if line else str(msg)
    return line[:300]


def translate(err: BaseException, op: str, path: str, secrets: Iterable[str] = ()) -> RemoteError:
    """One SDK exception -> the RemoteError to raise instead (never chained)."""
    where = f"{op} {path!r}" if path is not None else op
    if isinstance(err, RemoteError):
        return err
    if isinstance(err, (ServiceRequestError, ServiceResponseError)):
        kind = "timed out" if "timeout" in type(err).__name__.lower() else "connection failed"
        detail = scrub(_first_line(err), secrets)
        exc: RemoteError = Transient(f"{where}: {kind} after retries ({detail})")
        exc.code, exc.status = None, None
        return exc
    if isinstance(err, HttpResponseError):
        code = error_code(err)
        status = _status(err)
        cls = class_for(code, status)
        if isinstance(err, ClientAuthenticationError) and status is None:
            cls = AuthFailed  # token acquisition failed (azure-identity)
        elif status is None and code is None:
            # no answer to classify: the connection broke while the response was read
            # ("Connection broken: ConnectionResetError"), a transport failure like any other
            cls = Transient
        detail = scrub(_first_line(err), secrets)
        label = code or (f"HTTP {status}" if status else type(err).__name__)
        msg = f"{where}: {label}"
        if status:
            msg += f" (HTTP {status})"
        if detail.startswith("Operation returned an invalid status"):
            detail = ""  # the SDK's text for bodiless (HEAD, streamed) error responses
        if detail and (code is None or detail != code):
            msg += f": {detail}"
        exc = cls(msg)
        exc.code, exc.status = code, status
        return exc
    if isinstance(err, AzureError):
        exc = (AuthFailed if isinstance(err, ClientAuthenticationError) else RemoteError)(
            f"{where}: {scrub(_first_line(err), secrets)}"
        )
        exc.code, exc.status = None, None
        return exc
    if isinstance(err, (ConnectionError, TimeoutError)):
        exc = Transient(f"{where}: {scrub(_first_line(err), secrets)}")
        exc.code, exc.status = None, None
        return exc
    raise err
