"""Targeted faults: the dropped answer of a chosen operation, and names the share refuses."""

from __future__ import annotations

import json
import urllib.request
from urllib.error import HTTPError

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.fileshare import ShareServiceClient

from remote.emulator.faults import Faults
from tests.emulator_proc import Emulator

CUT = (ServiceResponseError, ServiceRequestError)


def _svc(emu: Emulator) -> ShareServiceClient:
    return ShareServiceClient.from_connection_string(emu.connection_string, retry_total=0)


def test_dropped_answer_of_a_chosen_operation_was_executed(fresh_emulator):
    """`drop_ops`: the request runs, its answer never arrives; only that operation's, only
    as many times as asked, and only successful ones."""
    emu = fresh_emulator
    share = _svc(emu).create_share("drops")
    share.get_file_client("a").create_file(3)
    snap = emu.set_faults(drop_ops={"RenameFile": 1})
    assert snap["drop_ops"] == {"RenameFile": 1}
    share.get_file_client("other").create_file(1)  # another operation: answered
    with pytest.raises(CUT):
        share.get_file_client("a").rename_file("b")
    names = sorted(e["name"] for e in share.list_directories_and_files())
    assert names == ["b", "other"]  # executed although the client saw the connection die
    assert emu.set_faults()["drop_ops"] == {}  # used up
    share.get_file_client("b").rename_file("c")  # answered again
    # a failed request does not use up the count
    emu.set_faults(drop_ops={"RenameFile": 1})
    with pytest.raises(ResourceNotFoundError):
        share.get_file_client("missing").rename_file("d")
    assert emu.set_faults()["drop_ops"] == {"RenameFile": 1}
    with pytest.raises(CUT):
        share.get_file_client("c").rename_file("d")
    assert sorted(e["name"] for e in share.list_directories_and_files()) == ["d", "other"]


def test_dropped_answers_by_path(fresh_emulator):
    emu = fresh_emulator
    share = _svc(emu).create_share("bypath")
    emu.set_faults(drop_ops={"CreateDirectory:x/*": 2})
    share.create_directory("x")  # the path "x" does not match "x/*": answered
    share.create_directory("y")
    with pytest.raises(CUT):
        share.create_directory("x/one")
    with pytest.raises(CUT):
        share.create_directory("X/Two")  # case-insensitive, like the share's names
    share.create_directory("x/three")  # count used up
    with pytest.raises(ResourceExistsError):
        share.create_directory("x/one")  # the dropped one was executed
    listed = sorted(e["name"] for e in share.get_directory_client("x").list_directories_and_files())
    assert listed == ["Two", "one", "three"]
    stats = emu.stats()
    assert stats["by_op"]["CreateDirectory"] == 6


def test_refused_names(fresh_emulator):
    """`refuse_names`: a path with a matching component is refused like a name the share
    cannot hold (400 and the chosen code), for every operation, and nothing is executed."""
    emu = fresh_emulator
    share = _svc(emu).create_share("refuse")
    share.create_directory("ok")
    share.get_file_client("ok/f").create_file(0)
    emu.set_faults(refuse_names=["bad*"])
    for call in (
        lambda: share.create_directory("Bad-dir"),
        lambda: share.get_file_client("ok/bad.txt").create_file(0),
        lambda: share.get_file_client("ok/f").rename_file("ok/badname"),
        lambda: share.get_file_client("bad/f").get_file_properties(),
    ):
        with pytest.raises(HttpResponseError) as ei:
            call()
        assert ei.value.status_code == 400
        assert ei.value.error_code == "InvalidResourceName"
    emu.set_faults(refuse_code="InvalidFileOrDirectoryPathName")
    with pytest.raises(HttpResponseError) as ei:
        share.create_directory("ok/bad")
    assert ei.value.error_code == "InvalidFileOrDirectoryPathName"
    share.create_directory("ok/good")  # other names are served
    emu.clear_faults()
    assert sorted(
        e["name"] for e in share.get_directory_client("ok").list_directories_and_files()
    ) == [
        "f",
        "good",
    ]
    share.create_directory("bad")  # no longer refused


@pytest.mark.parametrize(
    "faults",
    [
        {"drop_ops": {"RenameFile": -1}},
        {"drop_ops": ["RenameFile"]},
        {"drop_ops": {":x": 1}},
        {"refuse_names": "bad"},
        {"refuse_names": [""]},
        {"refuse_paths": [1]},
        {"refuse_code": "ServerBusy"},
    ],
)
def test_admin_rejects_bad_targeted_faults(fresh_emulator, faults):
    req = urllib.request.Request(
        f"http://{fresh_emulator.host}:{fresh_emulator.port}/_admin/faults",
        data=json.dumps(faults).encode(),
        method="PUT",
    )
    with pytest.raises(HTTPError) as ei:
        urllib.request.urlopen(req, timeout=5)
    assert ei.value.code == 400
    assert fresh_emulator.set_faults()["refuse_names"] == []  # nothing half-applied


def test_faults_reset_and_matching_rules():
    f = Faults()
    f.update({"drop_ops": {"RenameFile": 2, "DeleteFile:a/b": 1}, "refuse_names": ["*:*"]})
    assert not f.take_drop("RenameFile", "/acct/share/x", 404)  # only successes
    assert f.take_drop("DeleteFile", "/acct/share/A/B", 202)
    assert not f.take_drop("DeleteFile", "/acct/share/a/b", 202)  # used up
    assert f.take_drop("RenameFile", "/acct/share/x", 200)
    assert f.drop_ops == {"RenameFile": 1}
    assert f.refusal("/acct/share/dir/a%3Ab", {}) == "InvalidResourceName"
    src = {"x-ms-file-rename-source": "http://h/acct/share/q%3Aq/f"}
    assert f.refusal("/acct/share/ok", src) == "InvalidResourceName"
    assert f.refusal("/acct/share/ok", {}) is None
    f.update({"refuse_names": [], "refuse_paths": ["a/deep/*"]})
    assert f.refusal("/acct/share/A/Deep/x", {}) == "InvalidResourceName"
    assert f.refusal("/acct/share/a/deep", {}) is None  # the directory itself is fine
    assert f.refusal("/acct/share/b/deep/x", {}) is None
    f.reset()
    assert f.drop_ops == {} and f.refuse_names == [] and f.refuse_paths == []
    assert f.refuse_code == "InvalidResourceName"
