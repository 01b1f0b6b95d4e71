"""Error mapping, authentication failures and secret hygiene of AzureFilesRemote."""

from __future__ import annotations

import base64
import logging
import os
import traceback
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.fileshare import ShareSasPermissions, generate_share_sas

from remote.azure_errors import class_for, scrub
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
    RemoteError,
    Throttled,
    Transient,
)
from remote.credentials import ConfigError, open_remote
from tests.emulator_proc import DEV_ACCOUNT, DEV_KEY, free_port
from tests.remote.conftest import FAST

WRONG_KEY = base64.b64encode(b"not the right key, but valid base64 " * 2).decode()


def _sas(share: str, *, expiry: datetime, **perms: bool) -> str:
    return generate_share_sas(
        DEV_ACCOUNT, share, DEV_KEY, permission=ShareSasPermissions(**perms), expiry=expiry
    )


def _sig(sas: str) -> str:
    from urllib.parse import parse_qs

    return parse_qs(sas)["sig"][0]


def _all_text(exc: BaseException) -> str:
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


def _no_secret(text: str, *secrets: str) -> None:
    from urllib.parse import quote

    for s in secrets:
        assert s not in text and quote(s, safe="") not in text, "secret leaked"


# ----------------------------------------------------------------------------- mapping table


@pytest.mark.parametrize(
    "code,status,cls",
    [
        ("ResourceNotFound", 404, NotFound),
        ("ParentNotFound", 404, NotFound),
        ("ShareNotFound", 404, NotFound),
        ("ResourceAlreadyExists", 409, AlreadyExists),
        ("DirectoryNotEmpty", 409, NotEmpty),
        ("AuthenticationFailed", 403, AuthFailed),
        ("AuthorizationFailure", 403, PermissionDenied),
        ("AuthorizationPermissionMismatch", 403, PermissionDenied),
        ("LeaseIdMissing", 412, LeaseConflict),
        ("LeaseIdMismatchWithLeaseOperation", 409, LeaseConflict),
        ("LeaseAlreadyPresent", 409, LeaseConflict),
        ("LeaseNotPresentWithFileOperation", 412, LeaseConflict),
        ("ConditionNotMet", 412, PreconditionFailed),
        ("ServerBusy", 503, Throttled),
        ("InternalError", 500, Transient),
        ("OperationTimedOut", 500, Transient),
        ("InvalidResourceName", 400, InvalidName),
        ("ShareSizeLimitReached", 413, QuotaExceeded),
        (None, 503, Throttled),
        (None, 429, Throttled),
        (None, 502, Transient),
        (None, 404, NotFound),
        ("SomethingNew", 400, RemoteError),
    ],
)
def test_code_mapping(code, status, cls):
    assert class_for(code, status) is cls
    assert issubclass(Throttled, Transient) and Throttled.transient


def test_scrub():
    text = (
        "GET https://a.file.core.windows.net/s/f?sv=2021&sig=abc%2Bdef%3D&se=x failed; "
        "Authorization: SharedKey devstoreaccount1:QUJDREVGR0g= "
        "The MAC signature found in the HTTP request 'QUJDREVG' is not the same "
        f"AccountKey={DEV_KEY};"
    )
    out = scrub(text, [DEV_KEY])
    assert "abc%2Bdef" not in out and "QUJDREVG" not in out and DEV_KEY not in out
    assert "sig=REDACTED" in out and "AccountKey=REDACTED" in out


# ----------------------------------------------------------------------------- service errors


async def test_invalid_name(remote):
    with pytest.raises(InvalidName) as info:
        await remote.create_file('bad"name', 0)
    assert info.value.errno == 22
    assert info.value.__cause__ is None


async def test_errors_carry_code_and_status(remote):
    with pytest.raises(NotFound) as info:
        await remote.read("missing", 0, 1)
    assert info.value.code == "ResourceNotFound"
    assert info.value.status == 404
    assert "missing" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# ----------------------------------------------------------------------------- authentication


async def test_wrong_key(emulator, share_name, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthFailed) as info:
        await open_remote(
            emulator.share_url(share_name), account_key=WRONG_KEY, options=FAST, env={}
        )
    assert "authentication failed: check the account key" in str(info.value)
    assert "\n" not in str(info.value)
    _no_secret(_all_text(info.value), WRONG_KEY, DEV_KEY)
    _no_secret(caplog.text, WRONG_KEY, DEV_KEY)


async def test_wrong_key_on_operation(emulator, share_name, caplog):
    """A remote opened fine whose key stops working: AuthFailed per call, nothing leaked."""
    from remote.credentials import make_remote, resolve

    caplog.set_level(logging.DEBUG)
    loc, cred = resolve(emulator.share_url(share_name), account_key=WRONG_KEY, env={})
    r = make_remote(loc, cred, FAST)
    try:
        with pytest.raises(AuthFailed) as info:
            await r.create_file("x", 0)
        assert info.value.code == "AuthenticationFailed"
        _no_secret(_all_text(info.value), WRONG_KEY)
    finally:
        await r.aclose()
    _no_secret(caplog.text, WRONG_KEY)


async def test_expired_sas(emulator, share_name, caplog):
    caplog.set_level(logging.DEBUG)
    sas = _sas(
        share_name,
        expiry=datetime.now(UTC) - timedelta(hours=1),
        read=True,
        write=True,
        list=True,
    )
    with pytest.raises(AuthFailed) as info:
        await open_remote(f"{emulator.share_url(share_name)}?{sas}", options=FAST, env={})
    assert "SAS" in str(info.value)
    _no_secret(_all_text(info.value), _sig(sas))
    _no_secret(caplog.text, _sig(sas))


async def test_sas_without_write_permission(emulator, share_name, caplog):
    caplog.set_level(logging.DEBUG)
    sas = _sas(share_name, expiry=datetime.now(UTC) + timedelta(hours=1), read=True, list=True)
    r = await open_remote(f"{emulator.share_url(share_name)}?{sas}", options=FAST, env={})
    try:
        assert await r.list_dir("") == []
        with pytest.raises(PermissionDenied) as info:
            await r.create_file("nope", 0)
        _no_secret(_all_text(info.value), _sig(sas))
        assert "sig=" not in str(info.value) or "sig=REDACTED" in str(info.value)
        with pytest.raises(PermissionDenied):
            await r.mkdir("nodir")
    finally:
        await r.aclose()
    _no_secret(caplog.text, _sig(sas))


async def test_sas_with_write_permission_works(emulator, share_name):
    sas = _sas(
        share_name,
        expiry=datetime.now(UTC) + timedelta(hours=1),
        read=True,
        write=True,
        create=True,
        delete=True,
        list=True,
    )
    r = await open_remote(f"{emulator.share_url(share_name)}?{sas}", options=FAST, env={})
    try:
        await r.mkdir("d")
        await r.create_file("d/f", 3)
        await r.write("d/f", 0, b"sas")
        await r.rename("d/f", "d/g")
        assert await r.read("d/g", 0, 3) == b"sas"
        await r.delete_file("d/g")
        await r.rmdir("d")
    finally:
        await r.aclose()


async def test_unknown_share(emulator):
    with pytest.raises(NotFound) as info:
        await open_remote(emulator.share_url("nosuchshare"), options=FAST, env={})
    assert str(info.value) == f"share 'nosuchshare' not found at {emulator.endpoint}"


async def test_endpoint_not_answering():
    url = f"http://127.0.0.1:{free_port()}/{DEV_ACCOUNT}/share"
    with pytest.raises(Transient) as info:
        await open_remote(url, options=FAST, env={})
    assert str(info.value).startswith("cannot reach http://127.0.0.1:")
    assert "\n" not in str(info.value)


async def test_malformed_connection_string():
    with pytest.raises(ConfigError) as info:
        await open_remote(connection_string="AccountName=x;garbage", share="s", env={})
    assert "malformed connection string" in str(info.value)
    secret = "c2VjcmV0c2VjcmV0c2VjcmV0"
    with pytest.raises(ConfigError) as info:
        await open_remote(connection_string=f"AccountKey={secret}", share="s", env={})
    assert secret not in str(info.value)


# ----------------------------------------------------------------------------- logs


async def test_no_secrets_in_logs_during_normal_use(emulator, share_name, caplog):
    caplog.set_level(logging.DEBUG)
    sas = _sas(
        share_name,
        expiry=datetime.now(UTC) + timedelta(hours=1),
        read=True,
        write=True,
        create=True,
        list=True,
    )
    r = await open_remote(f"{emulator.share_url(share_name)}?{sas}", options=FAST, env={})
    try:
        await r.create_file("l", 3)
        await r.write("l", 0, os.urandom(3))
        await r.rename("l", "m")
        with pytest.raises(NotFound):
            await r.stat("nothing")
    finally:
        await r.aclose()
    assert caplog.records, "the SDK logs something at DEBUG; make sure we looked at it"
    _no_secret(caplog.text, _sig(sas), DEV_KEY)


async def test_proxy_settings_apply_to_the_endpoint(emulator, share_name, monkeypatch):
    """HTTP_PROXY is honoured, and NO_PROXY exempts the endpoint (both read once, at open)."""
    from dataclasses import replace

    from remote.base import Transient
    from tests.remote.conftest import FAST

    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    url = emulator.share_url(share_name)
    for k in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(k, dead)
    for k in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(k, "127.0.0.1")
    r = await open_remote(url, options=FAST, env={})
    try:
        await r.create_file("through-no-proxy", 3)
    finally:
        await r.aclose()
    for k in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(k)
    with pytest.raises(Transient):
        await open_remote(url, options=replace(FAST, retry_total=0), env={})


def test_a_response_cut_while_read_is_transient():
    """The SDK reports a connection broken while it read the answer as an HttpResponseError
    without status or code: a transport failure, retried soon, never a refusal."""
    from azure.core.exceptions import HttpResponseError

    from remote.azure_errors import translate

    err = HttpResponseError(
        "(\"Connection broken: ConnectionResetError(104, 'Connection reset by peer')\", ...)"
    )
    exc = translate(err, "rename_file", "a/b")
    assert isinstance(exc, Transient) and exc.transient and exc.status is None
