"""Samba's user.DOSATTRIB blob <-> the share's SMB attributes (fsync_fuse/dosattrib.py), on
a blob read off smbd 4.17 (`setmode +rh`, then getfattr -e hex)."""

from __future__ import annotations

from fsync_fuse import dosattrib, xattrs
from fsync_fuse.attrs import FILE, Inode

# version 5, valid flags 0x11 (attributes, creation time), attributes 0x23 (R, H, A)
SAMBA_417 = bytes.fromhex("000005000500000011000000230000007966d9b9e785dd01")


def test_the_key_is_the_attribute_names_key():
    assert dosattrib.KEY == xattrs.key_of(xattrs.DOSATTRIB)


def test_bits_of_a_real_blob_and_rewriting_them():
    assert dosattrib.attrib_of(SAMBA_417) == 0x23
    hidden_gone = dosattrib.with_bits(SAMBA_417, 0x21)
    assert dosattrib.attrib_of(hidden_gone) == 0x21
    # bits outside the mapped ones (0x10 directory, 0x80 normal...) stay as Samba wrote them
    v5 = b"\0\0\5\0\5\0\0\0\x11\0\0\0\x90\0\0\0"
    assert dosattrib.attrib_of(dosattrib.with_bits(v5, 0x1)) == 0x91
    assert hidden_gone[-8:] == SAMBA_417[-8:] and len(hidden_gone) == len(SAMBA_417)
    # an old-style blob with its hex string (then other padding): read, rewritten in place
    old = b"0x23\0\0" + SAMBA_417[2:6] + b"\0\0" + SAMBA_417[8:]
    assert dosattrib.attrib_of(old) == 0x23
    assert dosattrib.attrib_of(dosattrib.with_bits(old, 0x26)) == 0x26
    assert dosattrib.attrib_of(b"\0\x01\x00\x01\x00") is None  # unknown versions: not mapped
    assert dosattrib.attrib_of(dosattrib.synthesized(0x6)) == 0x6


def test_attribute_strings():
    assert dosattrib.bits_of("Hidden | Archive | NoScrubData") == 0x22
    assert dosattrib.same(
        dosattrib.apply("Archive | NoScrubData", 0x22), "NoScrubData|Hidden|Archive"
    )
    assert dosattrib.apply("Directory", 0x2) == "Directory|Hidden"
    assert dosattrib.bits_of("ReadOnly | Archive") == 0x21
    assert dosattrib.apply("ReadOnly|Hidden", 0) == "None"
    assert dosattrib.same(dosattrib.apply("Archive", 0x21), "ReadOnly|Archive")


def test_the_share_gets_the_bits_and_a_listing_brings_them_back():
    rec = Inode(5, 1, "f", FILE, attrs="Archive")
    rec.extra = {dosattrib.KEY: xattrs.encode_value(SAMBA_417)}
    sent = rec.share_attributes((0, 0))
    assert sent is not None and dosattrib.same(sent, "ReadOnly|Archive|Hidden|NoScrubData")
    rec.attrs = sent
    assert rec.share_attributes((0, 0)) is None  # the share has them: nothing to send
    # a client of the share cleared Hidden: the kept blob follows, nothing is sent back
    rec.attrs = "ReadOnly | Archive | NoScrubData"
    rec.extra = dosattrib.follow(rec.extra, rec.attrs)
    assert dosattrib.attrib_of(dosattrib.stored(rec.extra) or b"") == 0x21
    assert rec.share_attributes((0, 0)) is None


def test_a_creation_time_set_over_smb_is_read_from_the_blob():
    # smbd 4.17 kept 2026-12-07 01:10:19.2955001 UTC (NTTIME) with valid flag 0x10
    assert dosattrib.creation_of(SAMBA_417) == 1796605819295500100
    without = SAMBA_417[:8] + b"\x01\0\0\0" + SAMBA_417[12:]  # valid: attributes only
    assert dosattrib.creation_of(without) is None
    assert dosattrib.creation_of(dosattrib.synthesized(0x2)) is None
    # version 4: an itime before the creation time
    v4 = b"\0\0\4\0\4\0\0\0\x10\0\0\0\x20\0\0\0" + bytes(8) + SAMBA_417[16:24]
    assert dosattrib.creation_of(v4) == 1796605819295500100
    rec = Inode(5, 1, "f", FILE, attrs="Archive")
    assert rec.share_creation() is None
    rec.extra = {dosattrib.KEY: xattrs.encode_value(SAMBA_417)}
    assert rec.share_creation() == 1796605819295500100
