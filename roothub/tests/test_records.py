"""The parts without a hub: URLs derived from the root's, child names, the kept record."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from roothub import registration, urls


def test_every_url_comes_from_the_root_url() -> None:
    root = "https://hub.example.org/prefix"
    assert urls.authorize_url(root) == "https://hub.example.org/prefix/hub/api/oauth2/authorize"
    assert urls.token_url(root) == "https://hub.example.org/prefix/hub/api/oauth2/token"
    assert urls.userdata_url(root) == "https://hub.example.org/prefix/hub/api/user"
    assert urls.logout_url(root) == "https://hub.example.org/prefix/hub/logout"
    assert (
        urls.callback_url("http://127.0.0.3:8000/b") == "http://127.0.0.3:8000/b/hub/oauth_callback"
    )


def test_a_url_without_a_scheme_is_refused_with_an_example() -> None:
    with pytest.raises(ValueError, match=r"needs a scheme, e\.g\. https://hub\.example\.org"):
        urls.normalized("hub.example.org")


@pytest.mark.parametrize(
    ("child_url", "name"),
    [
        ("https://hub-a.example.org/", "hub-a.example.org"),
        ("http://127.0.0.3:8000/b/", "127.0.0.3-8000-b"),
        ("https://Hub.Example.org/Some Path/", "hub.example.org-some-path"),
    ],
)
def test_child_names_from_urls(child_url: str, name: str) -> None:
    assert urls.child_name_from_url(child_url) == name


def test_the_record_is_kept_mode_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "roothub-client.json"
    record = registration.ClientRecord(
        "https://hub.example.org/",
        "hub-a",
        "service-hub-a",
        "s3cret",
        "https://a/hub/oauth_callback",
    )
    registration.write_record(path, record)
    path.chmod(0o644)
    registration.write_record(path, record)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert registration.read_record(path) == record
    assert record.fits("https://hub.example.org", "hub-a", "https://a/hub/oauth_callback")
    assert not record.fits("https://hub.example.org/", "hub-b", "https://a/hub/oauth_callback")


def test_an_unreadable_record_is_none(tmp_path: Path) -> None:
    path = tmp_path / "roothub-client.json"
    assert registration.read_record(path) is None
    path.write_text('{"root_url": "https://hub.example.org/"}')
    assert registration.read_record(path) is None
    path.write_text("not json")
    assert registration.read_record(path) is None
