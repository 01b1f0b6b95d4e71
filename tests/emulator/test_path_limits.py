"""The emulator refuses paths as remote/naming.py says the service counts them: 2,048 UTF-16
code units with a separator before each component, 250 levels."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.fileshare import ShareServiceClient

from remote import naming


@pytest.fixture
def share(emulator, share_name):
    svc = ShareServiceClient.from_connection_string(emulator.connection_string)
    return svc.get_share_client(share_name)


def nest(share, parts: list[str]) -> None:
    for i in range(1, len(parts) + 1):
        share.create_directory("/".join(parts[:i]))


def test_path_length_in_utf16_units(share):
    parts = ["d" * 200] * 10  # 2,010 units
    nest(share, parts)
    base = "/".join(parts)
    room = naming.MAX_PATH - naming.path_units(parts) - 1  # 37 for the last name
    share.get_file_client(f"{base}/{'f' * room}").create_file(1)  # exactly 2,048
    with pytest.raises(HttpResponseError) as ei:
        share.get_file_client(f"{base}/{'g' * (room + 1)}").create_file(1)
    assert ei.value.error_code == "InvalidFileOrDirectoryPathName"
    # a character outside the Basic Multilingual Plane is two UTF-16 units
    wide = "\U0001f600" * ((room + 1) // 2)
    assert naming.units(wide) > room >= len(wide)
    with pytest.raises(HttpResponseError) as ei:
        share.get_file_client(f"{base}/{wide}").create_file(1)
    assert ei.value.error_code == "InvalidFileOrDirectoryPathName"


def test_depth(share):
    parts = ["c"] * naming.MAX_DEPTH
    nest(share, parts)
    with pytest.raises(HttpResponseError) as ei:
        share.create_directory("/".join([*parts, "c"]))
    assert ei.value.error_code == "InvalidFileOrDirectoryPathName"
