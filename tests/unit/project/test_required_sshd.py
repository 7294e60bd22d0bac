"""A machine without sshd: the real-sshd tests skip locally and fail in CI
(tests/helpers/required_tools.py, ``RUNBOOK_REQUIRE_TOOLS``)."""
from __future__ import annotations

import os

import pytest

from helpers import required_tools

pytestmark = [pytest.mark.unit]


@pytest.fixture
def no_sshd(tmp_path, monkeypatch):
    """PATH and the sbin folders point at an empty folder."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(required_tools, "SBIN", (str(tmp_path),))


def test_missing_sshd_skips_with_its_package_locally(no_sshd, monkeypatch):
    monkeypatch.delenv(required_tools.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception) as ei:
        required_tools.require_sshd()
    assert "sshd not installed" in str(ei.value) and "openssh-server" in str(ei.value)


def test_missing_sshd_fails_when_tools_are_required(no_sshd, monkeypatch):
    monkeypatch.setenv(required_tools.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception) as ei:
        required_tools.require_sshd()
    assert "openssh-server" in str(ei.value) and ".ci/run" in str(ei.value)


def test_sshd_outside_path_is_found_in_sbin(tmp_path, monkeypatch):
    # an ordinary user's PATH often lacks /usr/sbin: the sbin folders are searched too
    sbin, bin_ = tmp_path / "sbin", tmp_path / "bin"
    sbin.mkdir(), bin_.mkdir()
    for folder, name in ((sbin, "sshd"), (bin_, "ssh-keygen")):
        (folder / name).write_text("#!/bin/sh\n")
        os.chmod(folder / name, 0o755)
    monkeypatch.setenv("PATH", str(bin_))
    monkeypatch.setattr(required_tools, "SBIN", (str(sbin),))
    assert required_tools.require_sshd() == str(sbin / "sshd")
