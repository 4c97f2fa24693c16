"""Safe extraction: formats by content, unsafe members, bombs and limits stopped early."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from aimass.data import archive
from aimass.data.archive import archive_kind, extract_archive
from aimass.errors import DataError, TooLargeError

FILES = {"cat/1.jpg": b"\xff\xd8 first cat", "cat/2.jpg": b"\xff\xd8 second", "dog/1.png": b"\x89PNG dog"}
TAR_MODES = {"tar": "w", "tar.gz": "w:gz"}


def write_zip(path: Path, members: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            zf.writestr(info, data)
    return path


def write_tar(path: Path, kind: str, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, TAR_MODES[kind], format=tarfile.GNU_FORMAT) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


def write_archive(path: Path, kind: str, members: dict[str, bytes]) -> Path:
    if kind == "zip":
        return write_zip(path, members)
    return write_tar(path, kind, list(members.items()))


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def tree(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_extracts_each_format_detected_by_content(tmp_path, kind):
    path = write_archive(tmp_path / "upload.bin", kind, {"pets/" + k: v for k, v in FILES.items()})
    assert archive_kind(path) == kind
    result = extract_archive(path, tmp_path / "out")
    assert tree(tmp_path / "out") == {"pets/" + k: v for k, v in FILES.items()}
    assert result.kind == kind and result.files == ["pets/" + k for k in FILES]
    assert result.bytes_written == sum(len(v) for v in FILES.values())


def test_other_files_are_not_archives(tmp_path):
    import gzip

    (tmp_path / "a.csv").write_text("text,label\n")
    (tmp_path / "b.gz").write_bytes(gzip.compress(b"not a tar at all" * 100))
    (tmp_path / "fake.zip").write_bytes(b"just text")
    assert [archive_kind(tmp_path / n) for n in ("a.csv", "b.gz", "fake.zip", "missing.zip")] == [None] * 4
    with pytest.raises(DataError, match="not a .zip, .tar or .tar.gz archive"):
        extract_archive(tmp_path / "fake.zip", tmp_path / "out")


def assert_refused(path: Path, tmp_path: Path, member: str, rule: str) -> None:
    """Extraction fails naming the member and the rule, and nothing lands outside ``out``."""
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DataError) as info:
        extract_archive(path, tmp_path / "out")
    assert not isinstance(info.value, TooLargeError)
    assert f"archive member {member!r} refused: {rule}" in info.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*before, "out"})
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert all(not p.is_symlink() for p in (tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("/tmp/evil.txt", "it has an absolute path"),
        ("../evil.txt", "its path contains '..'"),
        ("ok/../../evil.txt", "its path contains '..'"),
        ("..\\evil.txt", "its path contains '..'"),
        ("C:/evil.txt", "it has an absolute path"),
    ],
)
def test_paths_leaving_the_destination_are_refused(tmp_path, kind, name, rule):
    path = write_archive(tmp_path / f"bad.{kind}", kind, {"fine.jpg": b"x", name: b"owned"})
    assert_refused(path, tmp_path, name, rule)


@pytest.mark.parametrize("kind", ["tar", "tar.gz"])
@pytest.mark.parametrize(
    ("member", "rule"),
    [
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "it is a symbolic link"),
        (special("up", tarfile.SYMTYPE, ".."), "it is a symbolic link"),
        (special("hard", tarfile.LNKTYPE, "fine.jpg"), "it is a hard link"),
        (special("tty", tarfile.CHRTYPE), "it is a device node or FIFO"),
        (special("disk", tarfile.BLKTYPE), "it is a device node or FIFO"),
        (special("pipe", tarfile.FIFOTYPE), "it is a device node or FIFO"),
    ],
)
def test_tar_links_and_devices_are_refused(tmp_path, kind, member, rule):
    members = [("fine.jpg", b"x"), member, (f"{member.name}/evil.txt", b"!")]
    path = write_tar(tmp_path / f"bad.{kind}", kind, members)
    assert_refused(path, tmp_path, member.name, rule)
    assert tree(tmp_path / "out") == {"fine.jpg": b"x"}


@pytest.mark.parametrize(
    ("mode", "rule"),
    [
        (stat.S_IFLNK | 0o777, "it is a symbolic link"),
        (stat.S_IFCHR | 0o644, "it is a device node, FIFO or socket"),
        (stat.S_IFIFO | 0o644, "it is a device node, FIFO or socket"),
    ],
)
def test_zip_links_and_devices_are_refused(tmp_path, mode, rule):
    path = write_zip(tmp_path / "bad.zip", {"fine.jpg": b"x", "link": b"/etc/passwd"}, {"link": mode})
    assert_refused(path, tmp_path, "link", rule)


def test_existing_link_in_destination_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out" / "cat")
    path = write_zip(tmp_path / "a.zip", {"cat/evil.txt": b"owned"})
    with pytest.raises(DataError, match="its path goes through a symbolic link"):
        extract_archive(path, tmp_path / "out")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_name_given_twice_is_refused(tmp_path, kind):
    members = [("a.jpg", b"first"), ("a.jpg", b"second")]
    if kind == "zip":
        path = tmp_path / "twice.zip"
        with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
            for name, data in members:
                zf.writestr(name, data)
    else:
        path = write_tar(tmp_path / "twice.tar", "tar", members)
    with pytest.raises(DataError, match="'a.jpg' refused: the same name appears twice"):
        extract_archive(path, tmp_path / "out")
    assert (tmp_path / "out" / "a.jpg").read_bytes() == b"first"


def test_mac_and_hidden_files_are_skipped(tmp_path):
    members = {"cat/1.jpg": b"1", "__MACOSX/cat/._1.jpg": b"f", "cat/.DS_Store": b"ds", ".git/config": b"c"}
    result = extract_archive(write_zip(tmp_path / "mac.zip", members), tmp_path / "out")
    assert tree(tmp_path / "out") == {"cat/1.jpg": b"1"}
    assert sorted(result.ignored) == sorted(set(members) - {"cat/1.jpg"})


def write_zeros_zip(path: Path, mib: int) -> Path:
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("zeros.bin", "w", force_zip64=True) as fh,
    ):
        for _ in range(mib):
            fh.write(bytes(archive.MIB))
    return path


class Zeros(io.RawIOBase):
    """``n`` zero bytes, produced as read (a 200 MB tar needs no 200 MB buffer)."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    return write_zeros_zip(tmp_path_factory.mktemp("bombs") / "bomb.zip", 200)


@pytest.fixture(scope="module")
def tgz_bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bombs") / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=9) as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 200 * archive.MIB
        tf.addfile(info, io.BufferedReader(Zeros(info.size)))
    return path


def test_zip_bomb_is_refused_from_its_header(tmp_path, zip_bomb):
    assert zip_bomb.stat().st_size < 400_000
    with pytest.raises(TooLargeError, match=r"zeros.bin expands more than 100:1 \(200.0 MiB from"):
        extract_archive(zip_bomb, tmp_path / "out")
    assert tree(tmp_path / "out") == {}


def test_tar_gz_bomb_is_stopped_while_streaming(tmp_path, tgz_bomb):
    with pytest.raises(TooLargeError, match="the archive as a whole expands more than 100:1") as info:
        extract_archive(tgz_bomb, tmp_path / "out")
    written = (tmp_path / "out" / "zeros.bin").stat().st_size
    assert written <= 100 * tgz_bomb.stat().st_size < 200 * archive.MIB // 8
    assert info.value.code == "too_large" and "AIMASS_MAX_ARCHIVE_RATIO" in info.value.hint


def test_bytes_are_counted_while_streaming_not_taken_from_headers(tmp_path, zip_bomb, monkeypatch):
    monkeypatch.setattr(archive._Writer, "_check_declared", lambda self, member: None)
    with pytest.raises(TooLargeError, match="zeros.bin expands more than 100:1"):
        extract_archive(zip_bomb, tmp_path / "out")
    packed = zipfile.ZipFile(zip_bomb).getinfo("zeros.bin").compress_size
    assert (tmp_path / "out" / "zeros.bin").stat().st_size <= 100 * packed < 200 * archive.MIB // 8
    with pytest.raises(TooLargeError, match="would bring the archive past 3.0 MiB"):
        extract_archive(zip_bomb, tmp_path / "out2", max_bytes=3 * archive.MIB, max_ratio=10_000)
    assert (tmp_path / "out2" / "zeros.bin").stat().st_size <= 3 * archive.MIB


def test_total_size_limit_from_headers_and_environment(tmp_path, monkeypatch):
    path = write_zip(tmp_path / "big.zip", {"a.bin": os.urandom(300_000), "b.bin": os.urandom(300_000)})
    monkeypatch.setenv("AIMASS_MAX_ARCHIVE_BYTES", "500000")
    with pytest.raises(TooLargeError, match="extracting b.bin would bring the archive past 0.5 MiB"):
        extract_archive(path, tmp_path / "out")
    assert tree(tmp_path / "out").keys() == {"a.bin"}
    assert extract_archive(path, tmp_path / "out2", max_bytes=10**6).bytes_written == 600_000


def test_small_files_that_compress_well_are_accepted(tmp_path):
    path = write_zip(tmp_path / "sparse.zip", {"blank.bmp": bytes(900_000), "photo.jpg": os.urandom(1000)})
    assert extract_archive(path, tmp_path / "out").bytes_written == 901_000


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_member_count_limit(tmp_path, kind, monkeypatch):
    members = {f"cat/{i}.jpg": b"x" for i in range(30)}
    path = write_archive(tmp_path / f"many.{kind}", kind, members)
    with pytest.raises(TooLargeError, match="the archive has more than 10 members"):
        extract_archive(path, tmp_path / "out", max_members=10)
    # a zip's central directory is counted before anything is written; a tar is read as it goes
    assert len(tree(tmp_path / "out")) == (0 if kind == "zip" else 10)
    monkeypatch.setenv("AIMASS_MAX_ARCHIVE_MEMBERS", "29")
    with pytest.raises(TooLargeError, match="more than 29 members"):
        extract_archive(path, tmp_path / "out2")


def test_truncated_archive_is_a_data_error(tmp_path):
    data = write_zip(tmp_path / "a.zip", {"a.jpg": os.urandom(5000)}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[:3000])
    with pytest.raises(DataError, match="cannot read the archive"):
        extract_archive(tmp_path / "cut.zip", tmp_path / "out")


def test_an_archive_holding_only_an_archive_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    from aimass.data import import_dataset

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("cat/a.png", b"not read")
    with zipfile.ZipFile(tmp_path / "outer.zip", "w") as z:
        z.writestr("inner.zip", inner.getvalue())
    with pytest.raises(DataError, match=r"only archive\(s\) inside: \['inner.zip'\]") as info:
        import_dataset(tmp_path / "outer.zip")
    assert "extract the inner one" in info.value.hint


class _RawName(zipfile.ZipInfo):
    """A member whose name is written as the given bytes with the UTF-8 flag (bit 11) clear, as
    Linux ``zip`` (UTF-8) and Chinese Windows (GBK) write them."""

    def __init__(self, raw: bytes, extra: bytes = b""):
        super().__init__(raw.decode("cp437"))
        self.raw, self.extra = raw, extra

    def _encodeFilenameFlags(self):
        return self.raw, self.flag_bits & ~0x800


def _unicode_path_field(name: str, for_raw: bytes) -> bytes:
    import struct
    import zlib

    body = b"\x01" + struct.pack("<L", zlib.crc32(for_raw)) + name.encode()
    return struct.pack("<2H", 0x7075, len(body)) + body


def _raw_zip(path: Path, members: list[_RawName]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info in members:
            zf.writestr(info, b"\x89PNG data of " + info.raw)
    return path


@pytest.mark.parametrize(
    ("raws", "names"),
    [
        ([n.encode() for n in ("蓝色.狗/1.png", "red cat/1.png")], ["蓝色.狗/1.png", "red cat/1.png"]),
        (
            [n.encode("gbk") for n in ("猫/1.png", "狗/1.png")],
            ["猫/1.png", "狗/1.png"],
        ),  # 猫 alone reads as è
        ([n.encode("cp437") for n in ("café/1.png", "Ünï/2.png")], ["café/1.png", "Ünï/2.png"]),
    ],
    ids=["utf-8 (Linux zip)", "gbk (Chinese Windows)", "cp437 (DOS)"],
)
def test_zip_names_without_the_utf8_flag_are_read_as_their_maker_wrote_them(tmp_path, raws, names):
    path = _raw_zip(tmp_path / "a.zip", [_RawName(raw) for raw in raws])
    assert archive.member_names(path) == names
    extracted = extract_archive(path, tmp_path / "out")
    assert extracted.files == names and all((tmp_path / "out" / n).is_file() for n in names)


def test_the_info_zip_unicode_path_field_names_the_member_when_it_matches(tmp_path):
    raw = "蓝色/1.png".encode("gbk")
    fresh = _RawName(raw, _unicode_path_field("蓝色/1.png", raw))
    stale = _RawName("猫/2.png".encode("gbk"), _unicode_path_field("renamed/2.png", b"other name"))
    path = _raw_zip(tmp_path / "u.zip", [fresh, stale])
    assert archive.member_names(path) == ["蓝色/1.png", "猫/2.png"]


@pytest.mark.parametrize(
    "member",
    [
        _RawName("../蓝色.png".encode()),
        _RawName("..\\猫.png".encode("gbk")),
        _RawName(b"ok.png", _unicode_path_field("../../evil.png", b"ok.png")),
    ],
    ids=["utf-8", "gbk", "unicode path field"],
)
def test_the_path_checks_run_on_the_decoded_name(tmp_path, member):
    path = _raw_zip(tmp_path / "bad.zip", [_RawName(b"fine.png"), member])
    with pytest.raises(DataError, match=r"refused: its path contains '\.\.'"):
        extract_archive(path, tmp_path / "out")
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "evil.png").exists()
