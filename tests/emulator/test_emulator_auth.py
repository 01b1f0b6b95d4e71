"""SharedKey and SAS authentication against the emulator process, with the real SDK."""

from __future__ import annotations

import base64
import urllib.request
from datetime import UTC, datetime, timedelta
from urllib.error import HTTPError

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.fileshare import (
    AccountSasPermissions,
    FileSasPermissions,
    ResourceTypes,
    ShareFileClient,
    ShareSasPermissions,
    ShareServiceClient,
    generate_account_sas,
    generate_file_sas,
    generate_share_sas,
)

from tests.emulator_proc import DEV_ACCOUNT, DEV_KEY


def _future(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


@pytest.fixture
def file_url(emulator, share_name):
    svc = ShareServiceClient.from_connection_string(emulator.connection_string)
    f = svc.get_share_client(share_name).get_file_client("secret.txt")
    f.upload_file(b"top secret")
    return f.url


def _file(emulator, share_name, path, sas):
    # (ShareFileClient.from_file_url would switch an http URL to https)
    return ShareFileClient(emulator.endpoint, share_name, path, credential=sas, retry_total=0)


def test_wrong_key_is_authentication_failed(emulator, share_name):
    bad_key = base64.b64encode(b"x" * 64).decode()
    svc = ShareServiceClient(
        emulator.endpoint, credential={"account_name": DEV_ACCOUNT, "account_key": bad_key}
    )
    with pytest.raises(ClientAuthenticationError) as ei:
        svc.get_share_client(share_name).get_share_properties()
    err = ei.value
    assert err.status_code == 403 and err.error_code == "AuthenticationFailed"
    body = err.response.text()
    assert "<AuthenticationErrorDetail>" in body and "RequestId:" in body
    assert err.response.body().startswith(b"\xef\xbb\xbf<?xml")


def test_anonymous_request_is_rejected(emulator, file_url):
    with pytest.raises(HTTPError) as ei:
        urllib.request.urlopen(file_url, timeout=10)
    assert ei.value.code == 401
    assert ei.value.headers["x-ms-error-code"] == "NoAuthenticationInformation"


def test_account_sas(emulator, share_name, file_url):
    sas = generate_account_sas(
        DEV_ACCOUNT,
        DEV_KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, list=True),
        _future(),
    )
    svc = ShareServiceClient(emulator.endpoint, credential=sas, retry_total=0)
    assert share_name in [s.name for s in svc.list_shares()]
    f = _file(emulator, share_name, "secret.txt", sas)
    assert f.download_file().readall() == b"top secret"
    with pytest.raises(HttpResponseError) as ei:
        f.upload_range(b"x", 0, 1)
    assert ei.value.status_code == 403
    assert ei.value.error_code == "AuthorizationPermissionMismatch"
    only_objects = generate_account_sas(
        DEV_ACCOUNT,
        DEV_KEY,
        ResourceTypes(object=True),
        AccountSasPermissions(read=True, list=True),
        _future(),
    )
    with pytest.raises(HttpResponseError) as ei:
        list(
            ShareServiceClient(
                emulator.endpoint, credential=only_objects, retry_total=0
            ).list_shares()
        )
    assert ei.value.error_code == "AuthorizationResourceTypeMismatch"


def test_expired_sas(emulator, share_name, file_url):
    sas = generate_share_sas(
        DEV_ACCOUNT,
        share_name,
        DEV_KEY,
        permission=ShareSasPermissions(read=True),
        expiry=_future(-1),
        start=_future(-2),
    )
    f = _file(emulator, share_name, "secret.txt", sas)
    with pytest.raises(ClientAuthenticationError) as ei:
        f.download_file().readall()
    assert ei.value.error_code == "AuthenticationFailed"
    assert "time frame" in ei.value.response.text()


def test_share_and_file_sas(emulator, share_name, file_url):
    share_sas = generate_share_sas(
        DEV_ACCOUNT,
        share_name,
        DEV_KEY,
        permission=ShareSasPermissions(read=True, write=True, create=True, list=True),
        expiry=_future(),
    )
    svc = ShareServiceClient(emulator.endpoint, credential=share_sas, retry_total=0)
    share = svc.get_share_client(share_name)
    share.get_file_client("new.txt").upload_file(b"created with a share SAS")
    assert {i["name"] for i in share.list_directories_and_files()} == {"new.txt", "secret.txt"}
    with pytest.raises(HttpResponseError) as ei:
        share.get_file_client("new.txt").delete_file()
    assert ei.value.error_code == "AuthorizationPermissionMismatch"

    file_sas = generate_file_sas(
        DEV_ACCOUNT,
        share_name,
        ["secret.txt"],
        DEV_KEY,
        permission=FileSasPermissions(read=True),
        expiry=_future(),
    )
    f = _file(emulator, share_name, "secret.txt", file_sas)
    assert f.download_file().readall() == b"top secret"
    # the same token for another file does not verify
    other = _file(emulator, share_name, "new.txt", file_sas)
    with pytest.raises(ClientAuthenticationError):
        other.download_file().readall()


def test_tampered_sas_signature(emulator, share_name, file_url):
    sas = generate_share_sas(
        DEV_ACCOUNT,
        share_name,
        DEV_KEY,
        permission=ShareSasPermissions(read=True),
        expiry=_future(),
    )
    tampered = sas.replace("sp=r", "sp=rwd")
    f = _file(emulator, share_name, "secret.txt", tampered)
    with pytest.raises(ClientAuthenticationError) as ei:
        f.delete_file()
    assert ei.value.error_code == "AuthenticationFailed"
