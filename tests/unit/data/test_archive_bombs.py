"""Archives that attack the readers themselves: tar headers read whole into memory, zip central
directories of millions of entries, listings built before any limit applies."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from aimass.autolearn.tuners import _count_images
from aimass.data import archive
from aimass.data.archive import extract_archive, member_names
from aimass.errors import DataError, TooLargeError

MB = 1024 * 1024


def header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def write_tgz(path: Path, *blocks: bytes) -> Path:
    """A .tar.gz of raw blocks, then a small ``x.txt`` and the end-of-archive marker."""
    with gzip.open(path, "wb") as gz:
        for block in blocks:
            gz.write(block)
        gz.write(header("x.txt", 1) + padded(b"x") + b"\0" * 1024)
    return path


def write_extended(path: Path, kind: bytes, size: int) -> Path:
    """A .tar.gz whose first header is a long name or pax record of ``size`` bytes of ``a``."""
    with gzip.open(path, "wb", compresslevel=1) as gz:
        gz.write(header("././@LongLink", size, kind))
        for _ in range(size // MB):
            gz.write(b"a" * MB)
        gz.write(b"\0" * (-size % 512) + header("x.txt", 0) + b"\0" * 1024)
    return path


@pytest.mark.parametrize(
    "kind", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE]
)
def test_a_huge_long_name_or_pax_record_is_refused_before_it_is_read(tmp_path, kind):
    path = write_extended(tmp_path / "name.tar.gz", kind, 50 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(
            TooLargeError, match="announces a 52,428,800-byte long name or pax record"
        ) as info:
            extract_archive(path, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * MB and len(str(info.value)) < 2000
    assert list(archive.archive_names(path)) == []


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_ordinary_long_names_still_extract(tmp_path, fmt):
    name = "cat/" + "a" * 200 + "/" + "b" * 150 + ".jpg"
    path = tmp_path / "long.tar.gz"
    with tarfile.open(path, "w:gz", format=fmt, pax_headers={"comment": "from git archive"}) as tf:
        info = tarfile.TarInfo(name)
        info.size = 3
        tf.addfile(info, io.BytesIO(b"jpg"))
    assert extract_archive(path, tmp_path / "out").files == [name]


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    size = len(body) + len(str(len(body) + 5))  # records here are 10,000 to 99,999 bytes long
    return str(size).encode() + body


def test_the_tar_stream_is_bounded_headers_included(tmp_path):
    """Forty 60 KB pax records before one small file: under every member limit, over the stream's."""
    record = pax_record("comment", "c" * 60_000)
    pax = header("pax", len(record), tarfile.XHDTYPE) + padded(record)
    path = write_tgz(tmp_path / "pax.tar.gz", *[pax] * 40)
    with pytest.raises(TooLargeError, match="unpacks to more than 1.0 MiB of headers and data"):
        extract_archive(path, tmp_path / "out", max_bytes=MB - 2 * 4096, max_members=2)
    assert extract_archive(path, tmp_path / "out2").files == ["x.txt"]


def test_sparse_members_and_a_second_global_header_are_refused(tmp_path):
    sparse = write_tgz(tmp_path / "sparse.tar.gz", header("s.bin", 0, tarfile.GNUTYPE_SPARSE))
    with pytest.raises(DataError, match="'s.bin' refused: it is a sparse file"):
        extract_archive(sparse, tmp_path / "out")
    record = b"11 a=bcdef\n"
    glob = header("g", len(record), tarfile.XGLTYPE) + padded(record)
    twice = write_tgz(tmp_path / "globals.tar.gz", glob, glob)
    with pytest.raises(DataError, match="'g' refused: it is a second global pax header"):
        extract_archive(twice, tmp_path / "out2")


def test_library_error_text_is_shortened(tmp_path):
    """A 60,000-character name is under the header limit, but the OS refuses it: the error quotes it."""
    name = "a" * 60_000
    path = write_tgz(
        tmp_path / "name.tar.gz", header("././@LongLink", len(name) + 1, b"L") + padded(name.encode())
    )
    with pytest.raises(DataError, match="cannot read the archive") as info:
        extract_archive(path, tmp_path / "out")
    assert len(str(info.value)) < 2000 and "characters)" in str(info.value)


def write_raw_zip(path: Path, entries: int, *, declared: int | None = None, zip64: bool = False) -> Path:
    """A zip of empty entries written as raw records (fast for any count); the end record may
    declare another count, as a crafted one can."""
    local, central = bytearray(), bytearray()
    for i in range(entries):
        name = f"{i}.jpg".encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                len(name),
                0,
                0,
                0,
                0,
                0o100644 << 16,
                offset,
            )
            + name
        )
    count = entries if declared is None else declared
    end = bytearray()
    if zip64:
        end += struct.pack(
            "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(central), len(local)
        )
        end += struct.pack("<IIQI", 0x07064B50, 0, len(local) + len(central), 1)
        count = 0xFFFF
    end += struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), len(central), len(local), 0
    )
    path.write_bytes(bytes(local + central + end))
    return path


@pytest.fixture
def no_zipfile(monkeypatch):
    """Fail the test if zipfile.ZipFile is built: the refusal must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile was built")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)


@pytest.mark.parametrize("zip64", [False, True])
@pytest.mark.parametrize(
    ("entries", "declared", "most"),
    [(3, 50, 10), (31, 3, 30)],  # the end record declares too many; it lies low: the records count
    ids=["declared", "counted"],
)
def test_a_zip_of_too_many_entries_is_refused_before_zipfile_reads_it(
    tmp_path, zip64, entries, declared, most, no_zipfile
):
    path = write_raw_zip(tmp_path / "many.zip", entries, declared=declared, zip64=zip64)
    with pytest.raises(TooLargeError, match=f"the archive has more than {most} members"):
        extract_archive(path, tmp_path / "out", max_members=most)
    assert not any((tmp_path / "out").iterdir())


def test_a_zip_of_a_hundred_thousand_and_one_entries_is_refused_quickly(tmp_path, no_zipfile):
    path = write_raw_zip(tmp_path / "many.zip", 100_001, zip64=True)
    with pytest.raises(TooLargeError, match="more than 100,000 members"):
        extract_archive(path, tmp_path / "out")


def test_zips_at_the_limit_still_extract(tmp_path):
    path = write_raw_zip(tmp_path / "ok.zip", 30, zip64=True)
    assert len(extract_archive(path, tmp_path / "out", max_members=30).files) == 30


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_counting_images_refuses_an_archive_over_the_member_limit(tmp_path, kind, monkeypatch):
    path = tmp_path / f"many.{kind}"
    if kind == "zip":
        write_raw_zip(path, 31)
    else:
        write_tgz(path, *[header(f"{i}.jpg", 0) for i in range(30)])
    monkeypatch.setenv("AIMASS_MAX_ARCHIVE_MEMBERS", "31")
    assert len(member_names(path)) == 31
    assert _count_images(path) == (31 if kind == "zip" else 30)  # the tar's last member is x.txt
    monkeypatch.setenv("AIMASS_MAX_ARCHIVE_MEMBERS", "30")
    with pytest.raises(TooLargeError, match="more than 30 members"):
        _count_images(path)
