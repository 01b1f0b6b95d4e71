"""Replay real Azure Files exchanges (tests/data/recordings/) against the emulator.

Each recording is one live SDK test against the real service. We send the same requests (method,
path, query, x-ms-* headers, body), signed with SharedKey for the emulator's key, and compare what
matters: the status, x-ms-error-code, the presence and format of the important headers (ETag
"0x…", RFC 1123 dates, SMB times with 7 fractional digits, decimal file ids, x-ms-request-id…),
and the XML element structure of bodies, UTF-8 BOM included. Values the service chose (share
names, list markers, lease ids, snapshot ids) are substituted from earlier responses.

Shares a recording uses without creating them were pre-existing in the recorded account; we
create them first (leased, when the recording shows them leased). The recordings get their own
emulator, emptied before each file, because account-level listings see every share.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
import requests
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.storage.fileshare import ShareLeaseClient, ShareServiceClient
from azure.storage.fileshare._shared.authentication import SharedKeyCredentialPolicy

from tests.emulator_proc import Emulator

RECORDINGS = Path(__file__).resolve().parent.parent / "data" / "recordings"
FILES = sorted(p.name for p in RECORDINGS.glob("*.json"))
RECORDED_HOST = "https://storagename.file.core.windows.net"
BOM = b"\xef\xbb\xbf"

# --------------------------------------------------------------------------- header rules

_TIME7 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$"
_RFC1123 = (
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$"
)
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
FORMATS = {
    "etag": r'^"0x[0-9A-F]+"$',
    "last-modified": _RFC1123,
    "date": _RFC1123,
    "x-ms-file-id": r"^\d+$",
    "x-ms-file-parent-id": r"^\d+$",
    "x-ms-file-creation-time": _TIME7,
    "x-ms-file-last-write-time": _TIME7,
    "x-ms-file-change-time": _TIME7,
    "x-ms-snapshot": _TIME7,
    "x-ms-file-permission-key": r"^\d+\*\d+$",
    "x-ms-lease-id": _UUID,
    "x-ms-lease-time": r"^\d+$",
}
# Headers whose value must equal the recorded one.
EQUAL = {
    "content-type",
    "content-range",
    "content-md5",
    "accept-ranges",
    "x-ms-error-code",
    "x-ms-file-attributes",
    "x-ms-lease-state",
    "x-ms-lease-status",
    "x-ms-lease-duration",
    "x-ms-type",
    "x-ms-content-length",
    "x-ms-server-encrypted",
    "x-ms-request-server-encrypted",
    "x-ms-version",
}
IGNORED = {"server", "transfer-encoding", "connection", "keep-alive"}
# The recorder stripped these, but the service always sends them.
ALWAYS = {"x-ms-request-id": _UUID, "x-ms-version": r"^\d{4}-\d{2}-\d{2}$", "date": _RFC1123}

SENT_HEADERS_DROPPED = {"user-agent", "connection", "accept-encoding", "authorization"}


# --------------------------------------------------------------------------- XML shape


def _xml_shape(
    root: ET.Element,
) -> tuple[set[tuple[str, ...]], dict[tuple[str, ...], list[list[str]]]]:
    """(set of element paths with their attribute names, child tag sequences per path)."""
    paths: set[tuple[str, ...]] = set()
    children: dict[tuple[str, ...], list[list[str]]] = {}

    def walk(el: ET.Element, prefix: tuple[str, ...]) -> None:
        path = prefix + (el.tag,)
        paths.add(path)
        for attr in el.attrib:
            paths.add(path + ("@" + attr,))
        seq = [c.tag for c in el]
        collapsed = [t for i, t in enumerate(seq) if i == 0 or seq[i - 1] != t]
        children.setdefault(path, []).append(collapsed)
        for c in el:
            walk(c, path)

    walk(root, ())
    return paths, children


def compare_xml(expected: bytes, actual: bytes) -> list[str]:
    problems: list[str] = []
    if expected.startswith(BOM) and not actual.startswith(BOM):
        problems.append("body: missing UTF-8 BOM before the XML declaration")
    try:
        act_root = ET.fromstring(actual.removeprefix(BOM))
    except ET.ParseError as exc:
        return problems + [f"body: not well-formed XML ({exc}): {actual[:200]!r}"]
    exp_root = ET.fromstring(expected.removeprefix(BOM))
    exp_paths, exp_children = _xml_shape(exp_root)
    act_paths, act_children = _xml_shape(act_root)
    missing = sorted("/".join(p) for p in exp_paths - act_paths)
    extra = sorted("/".join(p) for p in act_paths - exp_paths)
    if missing:
        problems.append(f"body: missing elements/attributes {missing}")
    if extra:
        problems.append(f"body: unexpected elements/attributes {extra}")
    # Child order: two tags the recording shows in one order must not come in the other.
    # (Pairs from every recorded sibling, since optional children appear in some only.)
    for path, exp_seqs in exp_children.items():
        before = {(a, b) for seq in exp_seqs for i, a in enumerate(seq) for b in seq[i + 1 :]}
        for seq in act_children.get(path, []):
            wrong = [
                (a, b)
                for i, a in enumerate(seq)
                for b in seq[i + 1 :]
                if (b, a) in before and (a, b) not in before
            ]
            if wrong:
                problems.append(
                    f"body: children of {'/'.join(path)} out of order: {wrong[0][1]} "
                    f"should come before {wrong[0][0]} in {seq}"
                )
                break
    if exp_root.tag == "Error":
        code = exp_root.findtext("Code")
        if act_root.findtext("Code") != code:
            problems.append(f"body: Error/Code {act_root.findtext('Code')!r} != {code!r}")
    return problems


# --------------------------------------------------------------------------- replay


def _body_text(body) -> str | None:
    if body is None:
        return None
    if isinstance(body, list):
        return "".join(body)
    return body


@dataclass
class Replay:
    emulator: Emulator
    entries: list[dict]
    session: requests.Session = field(default_factory=requests.Session)
    shares: dict[str, str] = field(default_factory=dict)  # recorded -> ours
    values: dict[str, str] = field(default_factory=dict)  # recorded marker/lease/snapshot -> ours
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.session.trust_env = False
        self.signer = SharedKeyCredentialPolicy(self.emulator.account, self.emulator.key)

    # -- names
    def share(self, recorded: str) -> str:
        if recorded not in self.shares:
            self.shares[recorded] = f"{recorded[:50]}r{secrets.token_hex(3)}"
        return self.shares[recorded]

    def _path(self, recorded_path: str) -> str:
        segments = recorded_path.split("/")  # ['', share, rest...]
        if len(segments) > 1 and segments[1]:
            segments[1] = quote(self.share(unquote(segments[1])), safe="")
        return "/".join(segments)

    def url(self, recorded_url: str) -> str:
        parts = urlsplit(recorded_url)
        query = "&".join(
            f"{quote(k, safe='')}={quote(self.values.get(v, v), safe='')}"
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        )
        url = f"{self.emulator.endpoint}{self._path(parts.path)}"
        return f"{url}?{query}" if query else url

    # -- pre-existing state
    def prepare(self) -> None:
        created: set[str] = set()
        preexisting: list[str] = []
        leased: set[str] = set()
        for e in self.entries:
            parts = urlsplit(e["RequestUri"])
            first = unquote(parts.path.split("/")[1]) if parts.path.count("/") >= 1 else ""
            q = dict(parse_qsl(parts.query))
            if first:
                if e["RequestMethod"] == "PUT" and q == {"restype": "share"}:
                    created.add(first)
                elif first not in created and first not in preexisting:
                    preexisting.append(first)
            body = _body_text(e["ResponseBody"])
            if body and "<Shares>" in body:
                root = ET.fromstring(body.lstrip("\ufeff"))
                for s in root.iter("Share"):
                    if (
                        s.findtext("Properties/LeaseState") == "leased"
                        and s.find("Snapshot") is None
                    ):
                        leased.add(s.findtext("Name") or "")
        if not preexisting:
            return
        svc = ShareServiceClient.from_connection_string(self.emulator.connection_string)
        for name in preexisting:
            sc = svc.get_share_client(self.share(name))
            sc.create_share()
            if name in leased:
                ShareLeaseClient(sc, lease_id=str(uuid.uuid4())).acquire(lease_duration=-1)

    # -- one exchange
    def send(self, i: int, e: dict) -> None:
        method = e["RequestMethod"]
        url = self.url(e["RequestUri"])
        headers: dict[str, str] = {}
        for k, v in e["RequestHeaders"].items():
            lk = k.lower()
            if lk in SENT_HEADERS_DROPPED:
                continue
            if lk == "x-ms-file-rename-source" or lk == "x-ms-copy-source":
                v = self.url(v)
            elif lk in ("x-ms-lease-id", "x-ms-proposed-lease-id"):
                v = self.values.get(v, v)
            headers[lk if lk.startswith("x-ms-") else k] = v
        headers["x-ms-date"] = formatdate(usegmt=True)
        body = base64.b64decode(e["RequestBody"]) if e["RequestBody"] else b""
        if method in ("PUT", "POST") or body:
            headers["Content-Length"] = str(len(body))

        request = HttpRequest(method, url, headers=headers)
        self.signer.on_request(PipelineRequest(request, PipelineContext(None)))
        resp = self.session.request(
            method, url, headers=dict(request.headers), data=body or None, timeout=30
        )
        self.compare(i, e, resp)
        self.learn(e, resp)

    def learn(self, e: dict, resp: requests.Response) -> None:
        """Remember the values the emulator chose where the service chose others."""
        rec = {k.lower(): v for k, v in e["ResponseHeaders"].items()}
        for h in ("x-ms-snapshot", "x-ms-lease-id"):
            if h in rec and resp.headers.get(h):
                self.values[rec[h]] = resp.headers[h]
        body = _body_text(e["ResponseBody"])
        if body and "<NextMarker>" in body:
            exp_marker = ET.fromstring(body.lstrip("\ufeff")).findtext("NextMarker")
            try:
                act_marker = ET.fromstring(resp.content.removeprefix(BOM)).findtext("NextMarker")
            except ET.ParseError:
                act_marker = None
            if exp_marker and act_marker:
                self.values[exp_marker] = act_marker

    def compare(self, i: int, e: dict, resp: requests.Response) -> None:
        where = f"#{i} {e['RequestMethod']} {e['RequestUri'].replace(RECORDED_HOST, '')}"
        bad = self.problems.append
        if resp.status_code != e["StatusCode"]:
            bad(
                f"{where}: status {resp.status_code} != recorded {e['StatusCode']} "
                f"(x-ms-error-code {resp.headers.get('x-ms-error-code')!r})"
            )
        rec = {
            k.lower(): (v if isinstance(v, str) else ", ".join(v))
            for k, v in e["ResponseHeaders"].items()
        }
        act = resp.headers
        body = _body_text(e["ResponseBody"])
        if "x-ms-error-code" not in rec and act.get("x-ms-error-code"):
            bad(f"{where}: unexpected x-ms-error-code {act['x-ms-error-code']!r}")
        for name, value in rec.items():
            if name in IGNORED:
                continue
            got = act.get(name)
            if name == "content-length":
                if body is None and got != value:
                    bad(f"{where}: Content-Length {got!r} != {value!r}")
                elif got is None and "chunked" not in act.get("transfer-encoding", ""):
                    bad(f"{where}: neither Content-Length nor chunked encoding")
                continue
            if got is None:
                bad(f"{where}: missing header {name}")
                continue
            if name in EQUAL or name.startswith("x-ms-meta-"):
                if got != value:
                    bad(f"{where}: {name} {got!r} != recorded {value!r}")
            if name in FORMATS and not re.match(FORMATS[name], got):
                bad(f"{where}: {name} {got!r} does not match {FORMATS[name]}")
        for name, pattern in ALWAYS.items():
            got = act.get(name)
            if got is None or not re.match(pattern, got):
                bad(f"{where}: header {name} missing or malformed: {got!r}")
        if e["RequestMethod"] == "HEAD":
            return
        if body is not None and body.lstrip("\ufeff").startswith("<?xml"):
            for p in compare_xml(body.encode("utf-8"), resp.content):
                bad(f"{where}: {p}")
        elif body is None and resp.content and e["StatusCode"] < 300:
            bad(f"{where}: unexpected body {resp.content[:100]!r}")

    def run(self) -> list[str]:
        self.prepare()
        for i, e in enumerate(self.entries):
            self.send(i, e)
        return self.problems


# --------------------------------------------------------------------------- fixtures and tests


@pytest.fixture(scope="module")
def rec_emulator(tmp_path_factory):
    with Emulator(data_dir=tmp_path_factory.mktemp("recordings-emulator") / "data") as emu:
        yield emu


def _empty_account(emu: Emulator) -> None:
    svc = ShareServiceClient.from_connection_string(emu.connection_string)
    for s in svc.list_shares():
        sc = svc.get_share_client(s.name)
        if getattr(s, "lease", None) is not None and s.lease.state == "leased":
            ShareLeaseClient(sc).break_lease(lease_break_period=0)
        sc.delete_share(delete_snapshots=True)


@pytest.mark.parametrize("name", FILES)
def test_recording(rec_emulator, name):
    _empty_account(rec_emulator)
    entries = json.loads((RECORDINGS / name).read_text())["Entries"]
    before = rec_emulator.stats()["total"]
    problems = Replay(rec_emulator, entries).run()
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)
    assert rec_emulator.stats()["total"] - before >= len(entries)  # every exchange was sent


def test_compare_xml_catches_differences():
    """The structural comparison itself: BOM, missing and reordered elements are reported."""
    exp = BOM + b'<?xml version="1.0"?><R a="1"><X/><Y><Z/></Y></R>'
    assert compare_xml(exp, exp) == []
    assert any("BOM" in p for p in compare_xml(exp, exp[3:]))
    assert any("missing" in p for p in compare_xml(exp, BOM + b'<R a="1"><X/><Y/></R>'))
    assert any("order" in p for p in compare_xml(exp, BOM + b'<R a="1"><Y><Z/></Y><X/></R>'))
    assert any("@a" in p for p in compare_xml(exp, BOM + b"<R><X/><Y><Z/></Y></R>"))
    # optional children seen only in some siblings do not confuse the order check
    two = BOM + b"<L><S><A/><C/></S><S><A/><B/><C/></S></L>"
    assert compare_xml(two, BOM + b"<L><S><A/><B/><C/></S><S><A/><C/></S></L>") == []
    assert compare_xml(two, BOM + b"<L><S><A/><C/><B/></S></L>") != []
