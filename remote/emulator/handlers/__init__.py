"""Operation handlers by resource type, and the routing table that maps requests to them.

A route key is (scope, method, comp): scope is service / share / directory / file (and
"share?" for a share URL without restype: the root directory's handles), HEAD is
folded into GET except for files, and "#copy" / "#rangefromurl" are the x-ms-copy-source
variants of Create File and Put Range. The op name is what /_admin/stats counts.
"""

from __future__ import annotations

from ..auth import OBJECT, SERVICE, SHARE, Access
from ..context import Route, RouteKey
from . import directory, file, file_copy, file_lease, file_ranges, service, share

R = Route


def _a(level: str, perms: str) -> Access:
    return Access(level, perms)


ROUTES: dict[RouteKey, Route] = {
    # service
    ("service", "GET", "list"): R("ListShares", service.list_shares, _a(SERVICE, "l")),
    ("service", "GET", "properties"): R(
        "GetFileServiceProperties", service.get_properties, _a(SERVICE, "r")
    ),
    ("service", "PUT", "properties"): R(
        "SetFileServiceProperties", service.set_properties, _a(SERVICE, "w")
    ),
    # share
    ("share", "PUT", ""): R("CreateShare", share.create, _a(SHARE, "cw")),
    ("share", "GET", ""): R("GetShareProperties", share.get_properties, _a(SHARE, "r")),
    ("share", "DELETE", ""): R("DeleteShare", share.delete, _a(SHARE, "d")),
    ("share", "PUT", "metadata"): R("SetShareMetadata", share.set_metadata, _a(SHARE, "w")),
    ("share", "PUT", "properties"): R("SetShareProperties", share.set_properties, _a(SHARE, "w")),
    ("share", "GET", "stats"): R("GetShareStats", share.stats, _a(SHARE, "r")),
    ("share", "PUT", "snapshot"): R("SnapshotShare", share.snapshot, _a(SHARE, "cw")),
    ("share", "GET", "acl"): R("GetShareACL", share.get_acl, _a(SHARE, "r")),
    ("share", "PUT", "acl"): R("SetShareACL", share.set_acl, _a(SHARE, "w")),
    ("share", "PUT", "filepermission"): R(
        "CreatePermission", share.create_permission, _a(SHARE, "cw")
    ),
    ("share", "GET", "filepermission"): R("GetPermission", share.get_permission, _a(SHARE, "r")),
    ("share", "PUT", "lease"): R("LeaseShare", share.lease, _a(SHARE, "wd")),
    # directory
    ("directory", "PUT", ""): R("CreateDirectory", directory.create, _a(OBJECT, "cw")),
    ("directory", "GET", ""): R(
        "GetDirectoryProperties", directory.get_properties, _a(OBJECT, "r")
    ),
    ("directory", "DELETE", ""): R("DeleteDirectory", directory.delete, _a(OBJECT, "d")),
    ("directory", "PUT", "metadata"): R(
        "SetDirectoryMetadata", directory.set_metadata, _a(OBJECT, "w")
    ),
    ("directory", "PUT", "properties"): R(
        "SetDirectoryProperties", directory.set_properties, _a(OBJECT, "w")
    ),
    ("directory", "GET", "list"): R(
        "ListFilesAndDirectories", directory.list_entries, _a(OBJECT, "l")
    ),
    ("directory", "PUT", "rename"): R("RenameDirectory", directory.rename, _a(OBJECT, "w")),
    ("directory", "GET", "listhandles"): R("ListHandles", directory.list_handles, _a(OBJECT, "rl")),
    ("directory", "PUT", "forceclosehandles"): R(
        "ForceCloseHandles", directory.force_close_handles, _a(OBJECT, "w")
    ),
    # handles of the root directory (no restype, no path)
    ("share?", "GET", "listhandles"): R("ListHandles", directory.list_handles, _a(OBJECT, "rl")),
    ("share?", "PUT", "forceclosehandles"): R(
        "ForceCloseHandles", directory.force_close_handles, _a(OBJECT, "w")
    ),
    # file
    ("file", "PUT", ""): R("CreateFile", file.create, _a(OBJECT, "cw")),
    ("file", "PUT", "#copy"): R("CopyFile", file_copy.copy, _a(OBJECT, "cw")),
    ("file", "GET", ""): R("GetFile", file.get, _a(OBJECT, "r")),
    ("file", "HEAD", ""): R("GetFileProperties", file.get_properties, _a(OBJECT, "r")),
    ("file", "DELETE", ""): R("DeleteFile", file.delete, _a(OBJECT, "d")),
    ("file", "PUT", "range"): R("PutRange", file.put_range, _a(OBJECT, "w")),
    ("file", "PUT", "#rangefromurl"): R(
        "PutRangeFromURL", file_copy.put_range_from_url, _a(OBJECT, "w")
    ),
    ("file", "GET", "rangelist"): R("ListRanges", file_ranges.list_ranges, _a(OBJECT, "r")),
    ("file", "PUT", "properties"): R("SetFileProperties", file.set_properties, _a(OBJECT, "w")),
    ("file", "PUT", "metadata"): R("SetFileMetadata", file.set_metadata, _a(OBJECT, "w")),
    ("file", "PUT", "lease"): R("LeaseFile", file_lease.lease, _a(OBJECT, "w")),
    ("file", "PUT", "copy"): R("AbortCopyFile", file_copy.abort_copy, _a(OBJECT, "w")),
    ("file", "PUT", "rename"): R("RenameFile", file.rename, _a(OBJECT, "w")),
    ("file", "GET", "listhandles"): R("ListHandles", directory.list_handles, _a(OBJECT, "r")),
    ("file", "PUT", "forceclosehandles"): R(
        "ForceCloseHandles", directory.force_close_handles, _a(OBJECT, "w")
    ),
}
