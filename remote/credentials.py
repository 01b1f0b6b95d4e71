"""Where the share is and how to authenticate to it.

`open_remote(url, ...)` accepts `https://ACCOUNT.file.core.windows.net/SHARE[?SAS]` or the
emulator's path-style `http://127.0.0.1:10000/devstoreaccount1/SHARE`, or a connection string plus
a share name, and resolves credentials in this order (first match wins):

1. a SAS in the URL;
2. an account key: the `account_key` argument, the `key_file` argument, `AZURE_STORAGE_KEY`;
3. a connection string: the `connection_string` argument, `AZURE_STORAGE_CONNECTION_STRING`;
4. the emulator's well-known development key, for account `devstoreaccount1`;
5. a token credential: the `credential` argument, else azure-identity's DefaultAzureCredential
   (Azure Files token auth needs token_intent="backup").

Errors are one line and never contain a key or a SAS signature.
"""

from __future__ import annotations

import base64
import binascii
import errno
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from azure.core.credentials import TokenCredential

from remote.azure import AzureFilesRemote, AzureOptions
from remote.base import AuthFailed, NotFound, PermissionDenied, RemoteError, Transient

DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENV_KEY = "AZURE_STORAGE_KEY"
ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
# Share names: 3-63 lowercase letters, digits and single hyphens, starting and ending with a
# letter or digit (the service answers a bare InvalidResourceName otherwise).
_SHARE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
_SAS_KEYS = {"sv", "ss", "srt", "sp", "se", "st", "spr", "sig", "sr", "si", "sip", "ses"}


class ConfigError(RemoteError, ValueError):
    """The URL, key or connection string is malformed or inconsistent."""

    errno = errno.EINVAL


# ----------------------------------------------------------------------------- locations


@dataclass(frozen=True, slots=True)
class ShareLocation:
    """A share's address, split the way the SDK wants it. `sas` has no leading '?'."""

    account_url: str  # "https://acct.file.core.windows.net" or "http://h:p/devstoreaccount1"
    account_name: str
    share: str
    sas: str | None = None
    path_style: bool = False

    @property
    def share_url(self) -> str:
        """The share URL without any SAS (safe to print)."""
        return f"{self.account_url}/{self.share}"


def _is_path_style(host: str) -> bool:
    if host in ("localhost", "host.docker.internal"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def check_share_name(share: str) -> None:
    """Refuse a name the service cannot hold, saying what the rule is."""
    if not _SHARE_NAME.match(share):
        raise ConfigError(
            f"invalid share name {share!r}: share names are 3 to 63 lowercase letters, digits "
            "and single hyphens, starting and ending with a letter or digit"
        )


def parse_share_url(url: str) -> ShareLocation:
    """Split a share URL into account URL, account name, share name and SAS."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise ConfigError(f"malformed share URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "malformed share URL: expected https://ACCOUNT.file.core.windows.net/SHARE"
        )
    host = parts.hostname
    netloc = parts.netloc.rsplit("@", 1)[-1]
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if _is_path_style(host):
        if len(segments) != 2:
            raise ConfigError(
                "malformed share URL: expected http://HOST:PORT/ACCOUNT/SHARE for an emulator"
            )
        account, share = segments
        account_url = f"{parts.scheme}://{netloc}/{quote(account)}"
        path_style = True
    else:
        if len(segments) != 1:
            raise ConfigError(
                "malformed share URL: expected https://ACCOUNT.file.core.windows.net/SHARE"
            )
        account = host.split(".", 1)[0]
        share = segments[0]
        account_url = f"{parts.scheme}://{netloc}"
        path_style = False
    sas = None
    if parts.query:
        keys = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        if "sig" in keys:
            sas = parts.query
        elif keys - _SAS_KEYS:
            raise ConfigError("malformed share URL: unexpected query (only a SAS is accepted)")
    if not share or not account:
        raise ConfigError("malformed share URL: missing account or share name")
    check_share_name(share)
    return ShareLocation(account_url, account, share, sas, path_style)


def split_share_path(url: str) -> tuple[str, str]:
    """SHARE_URL/DIR/SUB -> (SHARE_URL, "DIR/SUB"): a directory of the share named in its URL
    (a SAS query stays with the share URL)."""
    parts = urlsplit(url.strip())
    segments = [s for s in parts.path.split("/") if s]
    keep = 2 if parts.hostname and _is_path_style(parts.hostname) else 1
    share_path = "/" + "/".join(segments[:keep])
    query = f"?{parts.query}" if parts.query else ""
    below = "/".join(unquote(s) for s in segments[keep:])
    return f"{parts.scheme}://{parts.netloc}{share_path}{query}", below


def parse_connection_string(conn: str) -> dict[str, str]:
    """'A=b;C=d' -> {'a': 'b', 'c': 'd'} (keys lower-cased). Values are never echoed in errors."""
    out: dict[str, str] = {}
    for part in conn.strip().split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                "malformed connection string: expected Key=Value pairs separated by ';'"
            )
        out[key.strip().lower()] = value.strip()
    if out.get("usedevelopmentstorage", "").lower() == "true":
        out.setdefault("accountname", DEV_ACCOUNT)
        out.setdefault("accountkey", DEV_KEY)
        out.setdefault("fileendpoint", f"http://127.0.0.1:10000/{DEV_ACCOUNT}")
    if not out.get("accountname") and not out.get("fileendpoint"):
        raise ConfigError("malformed connection string: missing AccountName")
    if not out.get("accountkey") and not out.get("sharedaccesssignature"):
        raise ConfigError(
            "malformed connection string: missing AccountKey or SharedAccessSignature"
        )
    if out.get("accountkey"):
        _check_key(out["accountkey"], "connection string AccountKey")
    return out


def _connection_string_account_url(cs: Mapping[str, str]) -> tuple[str, str]:
    """(account_url, account_name) from a parsed connection string."""
    endpoint = cs.get("fileendpoint")
    if endpoint:
        loc = parse_share_url(endpoint.rstrip("/") + "/placeholder")
        name = cs.get("accountname") or loc.account_name
        return loc.account_url, name
    name = cs["accountname"]
    proto = cs.get("defaultendpointsprotocol", "https")
    suffix = cs.get("endpointsuffix", "core.windows.net")
    return f"{proto}://{name}.file.{suffix}", name


def _check_key(key: str, what: str) -> None:
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"malformed account key ({what}): not base64") from None


# ----------------------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class ResolvedCredential:
    """What to hand the SDK, and where it came from (for messages; never the secret itself)."""

    kind: str  # "sas" | "key" | "token"
    source: str  # e.g. "AZURE_STORAGE_KEY", "key file", "URL", "DefaultAzureCredential"
    credential: dict[str, str] | TokenCredential | None = None  # None: a SAS
    sas: str | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        out: list[str] = []
        if isinstance(self.credential, dict) and self.credential.get("account_key"):
            out.append(self.credential["account_key"])
        if self.sas:
            for key, value in parse_qsl(self.sas, keep_blank_values=True):
                if key.lower() == "sig" and value:
                    out.append(value)
        return tuple(out)


def resolve(
    url: str | None = None,
    *,
    share: str | None = None,
    account_key: str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    connection_string: str | None = None,
    credential: TokenCredential | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[ShareLocation, ResolvedCredential]:
    """Work out the share location and the credential to use (see the module docstring)."""
    env = os.environ if env is None else env
    conn = connection_string or env.get(ENV_CONNECTION_STRING) or None
    conn_source = "connection string" if connection_string else ENV_CONNECTION_STRING

    if url:
        loc = parse_share_url(url)
        if share and share != loc.share:
            raise ConfigError(f"share name {share!r} does not match the URL's {loc.share!r}")
    else:
        if not conn:
            raise ConfigError("no share URL and no connection string given")
        if not share:
            raise ConfigError("a connection string needs a share name")
        cs = parse_connection_string(conn)
        account_url, name = _connection_string_account_url(cs)
        check_share_name(share)
        loc = ShareLocation(
            account_url, name, share, None, _is_path_style(urlsplit(account_url).hostname or "")
        )

    def key_cred(key: str, source: str) -> ResolvedCredential:
        key = key.strip()
        _check_key(key, source)
        return ResolvedCredential(
            "key", source, {"account_name": loc.account_name, "account_key": key}
        )

    # 1. SAS in the URL
    if loc.sas:
        return loc, ResolvedCredential("sas", "URL", None, loc.sas)
    # 2. account key
    if account_key:
        return loc, key_cred(account_key, "account key argument")
    if key_file:
        try:
            text = Path(key_file).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {key_file}: {exc.strerror}") from None
        if not text.strip():
            raise ConfigError(f"key file {key_file} is empty")
        return loc, key_cred(text, "key file")
    if env.get(ENV_KEY):
        return loc, key_cred(env[ENV_KEY], ENV_KEY)
    # 3. connection string
    if conn:
        cs = parse_connection_string(conn)
        cs_account = cs.get("accountname") or _connection_string_account_url(cs)[1]
        if cs_account != loc.account_name:
            raise ConfigError(
                f"the {conn_source} is for account {cs_account!r}, not {loc.account_name!r}"
            )
        if cs.get("sharedaccesssignature"):
            sas = cs["sharedaccesssignature"].lstrip("?")
            loc = ShareLocation(loc.account_url, loc.account_name, loc.share, sas, loc.path_style)
            return loc, ResolvedCredential("sas", conn_source, None, sas)
        return loc, key_cred(cs["accountkey"], conn_source)
    # 4. the emulator's development account
    if loc.account_name == DEV_ACCOUNT:
        return loc, key_cred(DEV_KEY, "development storage key")
    # 5. a token
    if credential is not None:
        return loc, ResolvedCredential("token", "credential argument", credential)
    from azure.identity import DefaultAzureCredential

    return loc, ResolvedCredential("token", "DefaultAzureCredential", DefaultAzureCredential())


def make_remote(
    loc: ShareLocation, cred: ResolvedCredential, options: AzureOptions | None = None
) -> AzureFilesRemote:
    """An AzureFilesRemote for a resolved location (no network call)."""
    account_url = loc.account_url + (f"?{cred.sas}" if cred.sas else "")
    try:
        return AzureFilesRemote(
            account_url,
            loc.share,
            cred.credential,
            options=options,
            token_intent="backup" if cred.kind == "token" else None,
            secrets=cred.secrets,
        )
    except ValueError as exc:  # e.g. token credentials over plain http
        raise ConfigError(f"cannot use {loc.share_url}: {str(exc).splitlines()[0]}") from None


async def open_remote(
    url: str | None = None,
    *,
    share: str | None = None,
    account_key: str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    connection_string: str | None = None,
    credential: TokenCredential | None = None,
    options: AzureOptions | None = None,
    env: Mapping[str, str] | None = None,
) -> AzureFilesRemote:
    """Resolve credentials, then check with one call that the share exists and they work."""
    loc, cred = resolve(
        url,
        share=share,
        account_key=account_key,
        key_file=key_file,
        connection_string=connection_string,
        credential=credential,
        env=env,
    )
    remote = make_remote(loc, cred, options)
    try:
        await remote.check()
    except RemoteError as exc:
        await remote.aclose()
        raise _explain(exc, loc, cred) from None
    except BaseException:
        await remote.aclose()
        raise
    return remote


def _explain(exc: RemoteError, loc: ShareLocation, cred: ResolvedCredential) -> RemoteError:
    code = getattr(exc, "code", None)
    where = loc.share_url
    if isinstance(exc, AuthFailed):
        if cred.kind == "key":
            msg = f"authentication failed: check the account key ({cred.source}) for {where}"
        elif cred.kind == "sas":
            msg = f"authentication failed: the SAS ({cred.source}) was refused (expired or malformed?) for {where}"
        else:
            msg = f"authentication failed: the token ({cred.source}) was refused for {where}"
        out: RemoteError = AuthFailed(msg)
    elif isinstance(exc, PermissionDenied):
        out = PermissionDenied(
            f"permission denied: the credentials ({cred.source}) may not read {where}"
        )
    elif isinstance(exc, NotFound):
        if code in ("ShareNotFound", None, "ResourceNotFound"):
            out = NotFound(f"share {loc.share!r} not found at {loc.account_url}")
        else:
            out = NotFound(f"{where}: {code}")
    elif isinstance(exc, Transient) and getattr(exc, "status", None) is None:
        reason = str(exc).split(": ", 1)[-1]
        out = Transient(f"cannot reach {loc.account_url}: {reason}")
    else:
        out = type(exc)(f"{where}: {exc}")
    out.code, out.status = code, getattr(exc, "status", None)
    return out
