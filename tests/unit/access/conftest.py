from __future__ import annotations

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty AIMASS_HOME of its own (users, policies and the audit log start empty)."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
