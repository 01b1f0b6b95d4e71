"""Share URL parsing and the credential resolution order of remote.credentials."""

from __future__ import annotations

import base64

import pytest

from remote.credentials import (
    DEV_KEY,
    ConfigError,
    open_remote,
    parse_connection_string,
    parse_share_url,
    resolve,
)

KEY_A = base64.b64encode(b"A" * 64).decode()
KEY_B = base64.b64encode(b"B" * 64).decode()
KEY_C = base64.b64encode(b"C" * 64).decode()


def conn(account: str, key: str, endpoint: str | None = None) -> str:
    cs = f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};"
    return cs + (f"FileEndpoint={endpoint};" if endpoint else "")


# ----------------------------------------------------------------------------- URLs


def test_parse_azure_url():
    loc = parse_share_url("https://myacct.file.core.windows.net/myshare")
    assert loc.account_name == "myacct" and loc.share == "myshare"
    assert loc.account_url == "https://myacct.file.core.windows.net"
    assert loc.sas is None and not loc.path_style


def test_parse_azure_url_with_sas():
    loc = parse_share_url("https://acct.file.core.windows.net/shr/?sv=2021-06-08&sp=rl&sig=a%2Bb")
    assert loc.share == "shr" and loc.sas == "sv=2021-06-08&sp=rl&sig=a%2Bb"
    assert "sig" not in loc.share_url


def test_parse_emulator_url():
    loc = parse_share_url("http://127.0.0.1:10000/devstoreaccount1/share1")
    assert loc.account_name == "devstoreaccount1" and loc.share == "share1"
    assert loc.account_url == "http://127.0.0.1:10000/devstoreaccount1"
    assert loc.path_style
    assert parse_share_url("http://localhost:1/acc/shr").account_name == "acc"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://acct.file.core.windows.net/share",
        "https://acct.file.core.windows.net/",
        "https://acct.file.core.windows.net/share/dir",
        "http://127.0.0.1:10000/devstoreaccount1",
        "https://acct.file.core.windows.net/share?foo=bar",
        "not a url",
    ],
)
def test_parse_bad_urls(url):
    with pytest.raises(ConfigError):
        parse_share_url(url)


@pytest.mark.parametrize("name", ["ux", "Demo", "a--b", "-abc", "abc-", "a_b", "x" * 64])
def test_invalid_share_names_say_the_rule(name):
    with pytest.raises(ConfigError, match="3 to 63 lowercase letters"):
        parse_share_url(f"http://127.0.0.1:10000/devstoreaccount1/{name}")


@pytest.mark.parametrize("name", ["abc", "a-b-c", "share01", "x" * 63])
def test_valid_share_names(name):
    assert parse_share_url(f"https://acct.file.core.windows.net/{name}").share == name


def test_parse_connection_string():
    cs = parse_connection_string(conn("acct", KEY_A) + "EndpointSuffix=core.windows.net")
    assert cs["accountname"] == "acct" and cs["accountkey"] == KEY_A
    dev = parse_connection_string("UseDevelopmentStorage=true")
    assert dev["accountname"] == "devstoreaccount1" and dev["accountkey"] == DEV_KEY
    for bad in ("AccountName", "AccountName=x", "AccountName=x;AccountKey=###"):
        with pytest.raises(ConfigError) as info:
            parse_connection_string(bad)
        assert "###" not in str(info.value)


# ----------------------------------------------------------------------------- order


URL = "https://acct.file.core.windows.net/share"


def test_sas_in_url_wins():
    loc, cred = resolve(
        URL + "?sv=1&sig=abc",
        account_key=KEY_A,
        connection_string=conn("acct", KEY_B),
        env={"AZURE_STORAGE_KEY": KEY_C},
    )
    assert cred.kind == "sas" and cred.source == "URL" and cred.sas == "sv=1&sig=abc"
    assert cred.secrets == ("abc",)


def test_key_argument_then_key_file_then_env(tmp_path):
    env = {"AZURE_STORAGE_KEY": KEY_C, "AZURE_STORAGE_CONNECTION_STRING": conn("acct", KEY_B)}
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY_B + "\n")
    _, cred = resolve(URL, account_key=KEY_A, key_file=keyfile, env=env)
    assert cred.credential == {"account_name": "acct", "account_key": KEY_A}
    _, cred = resolve(URL, key_file=keyfile, env=env)
    assert cred.credential["account_key"] == KEY_B and cred.source == "key file"
    _, cred = resolve(URL, env=env)
    assert cred.credential["account_key"] == KEY_C and cred.source == "AZURE_STORAGE_KEY"


def test_connection_string_then_env_connection_string():
    env = {"AZURE_STORAGE_CONNECTION_STRING": conn("acct", KEY_B)}
    _, cred = resolve(URL, connection_string=conn("acct", KEY_A), env=env)
    assert cred.credential["account_key"] == KEY_A and cred.source == "connection string"
    _, cred = resolve(URL, env=env)
    assert cred.credential["account_key"] == KEY_B
    assert cred.source == "AZURE_STORAGE_CONNECTION_STRING"


def test_connection_string_for_another_account():
    with pytest.raises(ConfigError) as info:
        resolve(URL, connection_string=conn("other", KEY_A), env={})
    assert "other" in str(info.value) and KEY_A not in str(info.value)


def test_connection_string_with_sas():
    _, cred = resolve(
        URL, connection_string="AccountName=acct;SharedAccessSignature=sv=1&sig=zz", env={}
    )
    assert cred.kind == "sas" and cred.sas == "sv=1&sig=zz"


def test_dev_key_for_devstoreaccount1():
    loc, cred = resolve("http://127.0.0.1:1/devstoreaccount1/shr", env={})
    assert cred.kind == "key" and cred.credential["account_key"] == DEV_KEY


def test_default_azure_credential_last():
    from azure.identity import DefaultAzureCredential

    _, cred = resolve(URL, env={})
    assert cred.kind == "token" and isinstance(cred.credential, DefaultAzureCredential)
    sentinel = object()
    _, cred = resolve(URL, credential=sentinel, env={})
    assert cred.credential is sentinel


def test_connection_string_alone_with_share():
    cs = conn("devstoreaccount1", DEV_KEY, "http://127.0.0.1:10000/devstoreaccount1")
    loc, cred = resolve(connection_string=cs, share="sh1", env={})
    assert loc.account_url == "http://127.0.0.1:10000/devstoreaccount1"
    assert loc.share == "sh1" and cred.kind == "key"
    loc, _ = resolve(share="sh2", env={"AZURE_STORAGE_CONNECTION_STRING": conn("acct", KEY_A)})
    assert loc.account_url == "https://acct.file.core.windows.net" and loc.share == "sh2"
    with pytest.raises(ConfigError):
        resolve(connection_string=cs, env={})  # no share name


def test_bad_keys_are_reported_without_echo(tmp_path):
    with pytest.raises(ConfigError) as info:
        resolve(URL, account_key="not base64 !!!", env={})
    assert "not base64 !!!" not in str(info.value)
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError):
        resolve(URL, key_file=empty, env={})
    with pytest.raises(ConfigError):
        resolve(URL, key_file=tmp_path / "missing", env={})


# ----------------------------------------------------------------------------- against the emulator


async def test_open_with_connection_string_and_share(emulator, share_name):
    r = await open_remote(connection_string=emulator.connection_string, share=share_name, env={})
    try:
        await r.create_file("via-cs", 1)
        assert (await r.stat("via-cs")).size == 1
    finally:
        await r.aclose()


async def test_open_with_env_key(emulator, share_name):
    r = await open_remote(emulator.share_url(share_name), env={"AZURE_STORAGE_KEY": DEV_KEY})
    try:
        assert (await r.stat("")).is_dir
    finally:
        await r.aclose()


async def test_token_credential_over_http_is_a_config_error(emulator, share_name):
    """Token auth needs HTTPS; the SDK refuses it over http and we say so in one line."""

    class FakeToken:
        def get_token(self, *scopes, **kw):  # pragma: no cover - never reached
            raise AssertionError

    url = f"http://127.0.0.1:{emulator.port}/someaccount/{share_name}"
    with pytest.raises(ConfigError) as info:
        await open_remote(url, credential=FakeToken(), env={})
    assert "\n" not in str(info.value)


async def test_token_credential_uses_backup_intent():
    """Azure Files token auth needs x-ms-file-request-intent: backup on every request."""
    from remote.credentials import make_remote

    class FakeToken:
        def get_token(self, *scopes, **kw):  # pragma: no cover - no request is made
            raise AssertionError

    loc, cred = resolve(URL, credential=FakeToken(), env={})
    r = make_remote(loc, cred)
    try:
        assert r._share.file_request_intent == "backup"
        assert r._file("a/b").file_request_intent == "backup"
    finally:
        await r.aclose()
