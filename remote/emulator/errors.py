"""Storage errors as the Azure Files service reports them: HTTP status, error code, message.

Handlers raise `StorageError(code)`; the server turns it into the service's XML error body and
`x-ms-error-code` header. Messages are the service's own wording (first line of <Message>).
"""

from __future__ import annotations

# code -> (status, message)
CATALOG: dict[str, tuple[int, str]] = {
    # common
    "AuthenticationFailed": (
        403,
        "Server failed to authenticate the request. Make sure the value of Authorization header "
        "is formed correctly including the signature.",
    ),
    "AuthorizationFailure": (403, "This request is not authorized to perform this operation."),
    "AuthorizationPermissionMismatch": (
        403,
        "This request is not authorized to perform this operation using this permission.",
    ),
    "AuthorizationResourceTypeMismatch": (
        403,
        "This request is not authorized to perform this operation using this resource type.",
    ),
    "AuthorizationServiceMismatch": (
        403,
        "This request is not authorized to perform this operation using this service.",
    ),
    "AuthorizationProtocolMismatch": (
        403,
        "This request is not authorized to perform this operation using this protocol.",
    ),
    "AuthorizationSourceIPMismatch": (
        403,
        "This request is not authorized to perform this operation using this source IP {ip}.",
    ),
    "NoAuthenticationInformation": (
        401,
        "Server failed to authenticate the request. Please refer to the information in the "
        "www-authenticate header.",
    ),
    "ConditionNotMet": (
        412,
        "The condition specified using HTTP conditional header(s) is not met.",
    ),
    "InternalError": (500, "The server encountered an internal error. Please retry the request."),
    "ServerBusy": (
        503,
        "The server is currently unable to receive requests. Please retry your request.",
    ),
    "InvalidHeaderValue": (
        400,
        "The value for one of the HTTP headers is not in the correct format.",
    ),
    "InvalidQueryParameterValue": (
        400,
        "Value for one of the query parameters specified in the request URI is invalid.",
    ),
    "InvalidUri": (400, "The requested URI does not represent any resource on the server."),
    "InvalidInput": (400, "One of the request inputs is not valid."),
    "InvalidXmlDocument": (400, "XML specified is not syntactically valid."),
    "InvalidMetadata": (
        400,
        "The metadata specified is invalid. It has characters that are not permitted.",
    ),
    "MetadataTooLarge": (
        400,
        "The size of the specified metadata exceeds the maximum size permitted.",
    ),
    "InvalidResourceName": (400, "The specifed resource name contains invalid characters."),
    "OutOfRangeInput": (400, "One of the request inputs is out of range."),
    "MissingRequiredHeader": (
        400,
        "An HTTP header that's mandatory for this request is not specified.",
    ),
    "MissingContentLengthHeader": (411, "The Content-Length header was not specified."),
    "Md5Mismatch": (
        400,
        "The MD5 value specified in the request did not match with the MD5 value calculated by the server.",
    ),
    "RequestBodyTooLarge": (
        413,
        "The request body is too large and exceeds the maximum permissible limit.",
    ),
    "InvalidRange": (416, "The range specified is invalid for the current size of the resource."),
    "UnsupportedHttpVerb": (405, "The resource doesn't support specified Http Verb."),
    "UnsupportedHeader": (
        400,
        "One of the HTTP headers specified in the request is not supported.",
    ),
    "ResourceNotFound": (404, "The specified resource does not exist."),
    "ResourceAlreadyExists": (409, "The specified resource already exists."),
    "ResourceTypeMismatch": (
        409,
        "The specified resource type does not match the type of the existing resource.",
    ),
    "CannotVerifyCopySource": (404, "The specified resource does not exist."),
    # file service
    "ShareNotFound": (404, "The specified share does not exist."),
    "ShareAlreadyExists": (409, "The specified share already exists."),
    "ShareHasSnapshots": (409, "The share has snapshots and the operation requires no snapshots."),
    "ShareSnapshotNotFound": (404, "The specified share snapshot does not exist."),
    "ShareSnapshotOperationNotSupported": (
        400,
        "The operation is not supported on a share snapshot.",
    ),
    "ShareSnapshotCountExceeded": (
        409,
        "The total number of snapshots for the share is over the limit.",
    ),
    "ParentNotFound": (404, "The specified parent path does not exist."),
    "DirectoryNotEmpty": (409, "The specified directory is not empty."),
    "CannotDeleteFileOrDirectory": (
        409,
        "The file or directory could not be deleted because it is in use by an SMB client.",
    ),
    "InvalidFileOrDirectoryPathName": (400, "File or directory path is too long."),
    "ReadOnlyAttribute": (
        409,
        "The specified resource is read-only and cannot be modified at this time.",
    ),
    "FileShareProvisionedStorageInvalid": (400, "The specified share quota is invalid."),
    "ShareQuotaExceeded": (409, "The file share quota has been exceeded."),
    "InvalidFilePermission": (400, "The file permission specified is invalid."),
    "FilePermissionNotFound": (404, "The specified permission key does not exist."),
    # leases (file)
    "LeaseIdMissing": (
        412,
        "There is currently a lease on the file and no lease ID was specified in the request.",
    ),
    "LeaseIdMismatchWithFileOperation": (
        412,
        "The lease ID specified did not match the lease ID for the file.",
    ),
    "LeaseNotPresentWithFileOperation": (412, "There is currently no lease on the file."),
    "LeaseAlreadyPresent": (409, "There is already a lease present."),
    "LeaseIdMismatchWithLeaseOperation": (
        409,
        "The lease ID specified did not match the lease ID for the file.",
    ),
    "LeaseNotPresentWithLeaseOperation": (409, "There is currently no lease on the file."),
    "LeaseIsBrokenAndCannotBeRenewed": (
        409,
        "The lease ID matched, but the lease has been broken explicitly and cannot be renewed.",
    ),
    "LeaseIsBreakingAndCannotBeAcquired": (
        409,
        "The lease ID matched, but the lease is currently in breaking state and cannot be acquired "
        "until it is broken.",
    ),
    "LeaseIsBreakingAndCannotBeChanged": (
        409,
        "The lease ID matched, but the lease is currently in breaking state and cannot be changed.",
    ),
    "LeaseLost": (
        412,
        "A lease ID was specified, but the lease for the file has expired.",
    ),
}

# Share-level lease errors read "file share" instead of "file".
SHARE_LEASE_MESSAGES: dict[str, str] = {
    "LeaseIdMissing": "There is currently a lease on the file share and no lease ID was specified "
    "in the request.",
    "LeaseIdMismatchWithContainerOperation": "The lease ID specified did not match the lease ID "
    "for the file share.",
    "LeaseNotPresentWithContainerOperation": "There is currently no lease on the file share.",
    "LeaseIdMismatchWithLeaseOperation": "The lease ID specified did not match the lease ID for "
    "the file share.",
    "LeaseNotPresentWithLeaseOperation": "There is currently no lease on the file share.",
}


class StorageError(Exception):
    """An error answer: status, code, message, extra XML elements and extra headers."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        details: dict[str, str] | None = None,
        headers: list[tuple[str, str]] | None = None,
        **fmt: str,
    ) -> None:
        known_status, known_message = CATALOG.get(code, (500, "The server encountered an error."))
        self.code = code
        self.status = status or known_status
        msg = message or known_message
        if fmt:
            msg = msg.format(**fmt)
        self.message = msg
        self.details = details or {}
        self.headers = headers or []
        super().__init__(f"{self.status} {code}: {msg}")


def share_lease_error(code: str) -> StorageError:
    """Lease errors on a share use the share wording and (for mismatches) container codes."""
    status = 412 if code.startswith("LeaseIdMissing") or "ContainerOperation" in code else 409
    return StorageError(code, SHARE_LEASE_MESSAGES.get(code), status=status)
