"""Model folders are sealed with sha256 sums and moved into place whole; a torn or altered file
is refused by name when the version is loaded."""

from __future__ import annotations

import pytest

from aimass import api
from aimass.errors import IntegrityError
from aimass.store import artifacts, registry


def test_seal_then_verify_catches_truncation_and_missing_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "sub" / "b.json").write_text("{}")
    artifacts.seal(tmp_path)
    assert artifacts.verify(tmp_path) == 2
    (tmp_path / "a.bin").write_bytes(b"x" * 999)
    with pytest.raises(IntegrityError, match="a.bin"):
        artifacts.verify(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "sub" / "b.json").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        artifacts.verify(tmp_path)


def test_write_atomic_leaves_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")

    def broken(path):
        with open(path, "w") as handle:
            handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        artifacts.write_atomic(target, broken)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_registered_version_is_sealed_and_checked_on_load(small_model):
    record = registry.register(small_model, "sealed")
    folder = registry.open_folder(record)
    assert (folder / artifacts.SUMS).exists() and artifacts.verify(folder) >= 2
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".building-")]
    assert api.load(record.ref).predict(["The striker scored twice"])
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a torn write
    with pytest.raises(IntegrityError) as err:
        api.load(record.ref)
    assert "model.safetensors" in err.value.message and err.value.hint
    weights.write_bytes(data)
    assert api.load(record.ref).predict(["The striker scored twice"])
