"""Database URLs that cannot work are config errors naming the field, before anything starts."""

from __future__ import annotations

import pytest

from susee.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://root@127.0.0.1:notaport/seedb000", "Port could not be cast"),
        ("mysql://root@127.0.0.1:99999/seedb000", "out of range"),
        ("mysql://root@127.0.0.1:0/seedb000", "port must be 1-65535"),
        ("mysql://root@[::1/seedb000", "Invalid IPv6 URL"),
        ("mysql://root:secret@[fe80::1/seedb000", "Invalid IPv6 URL"),
        ("sqlite:///:memory:", "in-memory SQLite database loses every row"),
        ("sqlite:///file:x?mode=memory", "in-memory SQLite database loses every row"),
        ("sqlite://", "needs a file"),
    ],
)
def test_a_bad_database_url_is_a_config_error_naming_the_field(tmp_path, url, says):
    site = tmp_path / "site.yaml"
    site.write_text(f"database:\n  url: '{url}'\n", encoding="utf-8")

    with pytest.raises(ConfigError) as error:
        load_settings(site, environ={})

    assert "database.url" in str(error.value) and says in str(error.value)
    assert "secret" not in str(error.value)


@pytest.mark.parametrize("url", ["mysql://root@[::1]:3306/seedb000", "mysql://u@db.example:3307", "sqlite:///site.db"])
def test_good_urls_still_load(tmp_path, url):
    site = tmp_path / "site.yaml"
    site.write_text(f"database:\n  url: '{url}'\n", encoding="utf-8")
    assert load_settings(site, environ={}).database.url == url
