"""``signver doctor``'s checks (``doctor.py``): the HPU execution mode and the Lightning / lightning-habana pair."""

from __future__ import annotations

from unittest import mock

import pytest

from signver_torch.doctor import check_mode, check_versions


def test_doctor_checks_the_mode_and_the_version_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PT_HPU_LAZY_MODE", "1")
    assert check_mode("eager").status == "fail" and "export PT_HPU_LAZY_MODE=0" in check_mode("eager").detail
    assert check_mode("lazy").status == "ok"
    monkeypatch.delenv("PT_HPU_LAZY_MODE")
    assert check_mode("eager").status == "warn"
    versions = {"lightning": "2.3.3", "lightning-habana": "1.6.0"}
    with mock.patch("signver_torch.doctor.installed_version", side_effect=versions.get):
        assert check_versions().status == "fail" and "needs Lightning >= 2.4" in check_versions().detail
    versions.update({"lightning": "2.2.4", "lightning-habana": "1.5.0"})
    with mock.patch("signver_torch.doctor.installed_version", side_effect=versions.get):
        assert check_versions().status == "fail"
    versions.update({"lightning": "2.5.5", "lightning-habana": "1.6.0"})
    with mock.patch("signver_torch.doctor.installed_version", side_effect=versions.get):
        assert check_versions().status == "warn" and "Lightning 2.3.3" in check_versions().detail
