"""The HTTP endpoint against a real running site: token, read-only, bounds, secrets, health, API."""

from __future__ import annotations

import asyncio
import base64
import calendar
import json
import socket
import time

import aiohttp
import pytest

from susee.commands import load_site
from susee.config import ConfigError
from susee.supervisor import Supervisor
from susee.sinks import create_sink
from susee.web import LiveView
from web_site import TOKEN, running_site, stored, write_config

BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Text a hostile or careless profile author could put where the page shows descriptions.
HOSTILE = '<img src=x onerror="window.pwned=1">&<script>window.pwned=2</script>'


async def _get(session: aiohttp.ClientSession, url: str, headers: dict | None = None, method: str = "GET"):
    async with session.request(method, url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def _until(predicate, timeout_s: float = 20.0):
    """Poll ``predicate`` (async) until it returns something truthy; synchronises on the service's state."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await predicate()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.fixture
async def site(tmp_path):
    async with running_site(tmp_path, http={"token": TOKEN}) as running:
        yield running


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


async def test_every_path_but_healthz_needs_the_token(site, session) -> None:
    for path in ("", "api/site", "api/devices", "api/last?device=d00", "metrics", "readyz", "static/app.js"):
        status, headers, _ = await _get(session, site.url + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic")
    status, _, _ = await _get(session, site.url + "healthz")
    assert status == 200


@pytest.mark.parametrize(("header", "accepted"), [
    (f"Bearer {TOKEN}", True),
    ("Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode(), True),
    ("Basic " + base64.b64encode(f":{TOKEN}".encode()).decode(), True),
    (f"Bearer {TOKEN}x", False),
    (f"Bearer {TOKEN[:-1]}", False),
    ("Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode(), False),  # the token as user name is not enough
    ("Basic !!!not-base64", False),
    (f"Token {TOKEN}", False),
    ("Bearer", False),
])
async def test_token_as_bearer_or_basic_password(site, session, header, accepted) -> None:
    status, _, _ = await _get(session, site.url + "api/site", {"Authorization": header})
    assert status == (200 if accepted else 401)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_every_endpoint_is_read_only(site, session, method) -> None:
    for path in ("", "api/site", "api/devices", "metrics", "healthz"):
        status, headers, _ = await _get(session, site.url + path, BEARER, method)
        assert status == 405, (method, path)
        assert headers["Allow"] == "GET, HEAD"


async def test_no_secret_in_any_page_answer_or_metric(tmp_path, session, monkeypatch) -> None:
    db_password = "db-password-never-shown-42"
    monkeypatch.setenv("SUSEE_DATABASE__PASSWORD", db_password)
    async with running_site(tmp_path, http={"token": TOKEN}) as running:
        await _until(lambda: _status(session, running.url + "readyz", 200))
        for path in ("", "static/app.js", "api/site", "api/devices", "api/last?device=d00", "api/device?device=d00",
                     "api/series?device=d00&param=133", "metrics", "readyz", "healthz", "nowhere"):
            _, headers, body = await _get(session, running.url + path, BEARER)
            text = body.decode() + json.dumps(headers)
            assert TOKEN not in text and db_password not in text, path


async def _status(session, url, expected):
    status, _, _ = await _get(session, url, BEARER)
    return status == expected


async def test_readyz_once_polled_and_healthz_503_while_stopping(site, session) -> None:
    await _until(lambda: _status(session, site.url + "readyz", 200))
    site.supervisor.stop_event.set()  # what a stop signal sets first
    status, _, body = await _get(session, site.url + "healthz")
    assert status == 503 and json.loads(body)["status"] == "stopping"
    status, _, body = await _get(session, site.url + "readyz", BEARER)
    assert status == 503 and "the service is stopping" in json.loads(body)["reasons"]


async def test_readyz_says_why_before_any_poll(tmp_path, session) -> None:
    async with running_site(tmp_path) as running:
        running.supervisor.stop_event.set()  # stops it before its first tick
        status, _, body = await _get(session, running.url + "readyz")
        reasons = json.loads(body)["reasons"]
        assert status == 503 and "the service is stopping" in reasons


async def test_series_over_a_huge_range_is_refused_with_the_bound(site, session) -> None:
    await _until(lambda: stored(site, "SELECT 1 FROM see000Raw LIMIT 1"))
    now = time.time()
    status, _, body = await _get(session, site.url + f"api/series?device=d00&param=133&from={now - 400 * 86400}"
                                  f"&to={now}", BEARER)
    assert status == 400 and "at most 7 days" in json.loads(body)["error"]
    status, _, body = await _get(session, site.url + f"api/series?device=d00&param=133&from={now - 6 * 86400}"
                                  f"&to={now}&step=1", BEARER)
    answer = json.loads(body)
    assert status == 200 and answer["step_s"] >= 6 * 86400 / 2000  # step grown to at most 2,000 points
    for query, fragment in (("device=nope&param=133", "no such device"), ("device=d00&param=999", "has no param"),
                            ("device=d00&param=133&from=abc", "could not convert")):
        status, _, body = await _get(session, site.url + "api/series?" + query, BEARER)
        assert status in (400, 404) and fragment in json.loads(body)["error"], query


async def test_series_is_the_mean_of_the_stored_good_values(site, session) -> None:
    newest = await _until(lambda: stored(
        site, "SELECT MAX(Date) FROM see000Raw WHERE idDevice = 'd00' AND idParam = '133' HAVING COUNT(*) >= 2"))
    newest_date = newest[0][0]
    until_s = calendar.timegm(time.strptime(newest_date[:19], "%Y-%m-%d %H:%M:%S")) + 0.5  # rows up to it are final
    day_s = until_s // 86400 * 86400
    status, _, body = await _get(
        session, site.url + f"api/series?device=d00&param=133&from={day_s}&to={until_s}&step=86400", BEARER)
    points = json.loads(body)["points"]
    expected = site.query("SELECT AVG(Value) FROM see000Raw WHERE idDevice = 'd00' AND idParam = '133' "
                          "AND Code = 0 AND Date <= ?", (newest_date,))
    assert status == 200
    assert points == [[day_s, pytest.approx(expected[0][0])]]


async def test_last_values_are_the_database_rows_with_their_descriptions(site, session) -> None:
    await _until(lambda: stored(site, "SELECT 1 FROM see000Last WHERE idDevice = 'd01'"))
    status, _, body = await _get(session, site.url + "api/last?device=d01", BEARER)
    answer = json.loads(body)
    assert status == 200 and answer["source"] == "database"
    power = next(v for v in answer["values"] if v["param"] == "133")
    assert (power["acronym"], power["unit"], power["descr_eng"], power["descr_ita"]) == \
        ("P_TOT", "W", "Active Power - Total", "Potenza attiva totale")
    in_raw = site.query("SELECT Value FROM see000Raw WHERE idDevice = 'd01' AND idParam = '133' AND Date = ?",
                        (power["date"],))
    assert in_raw == [(power["value"],)]
    status, _, _ = await _get(session, site.url + "api/last?device=unknown", BEARER)
    assert status == 404


async def test_fleet_rows_show_status_with_code_bits_in_words(site, session) -> None:
    site.simulator.set_fault(2, "illegal_address")

    async def failing():
        _, _, body = await _get(session, site.url + "api/devices", BEARER)
        answer = json.loads(body)
        devices = {row[0]: dict(zip(answer["columns"], row)) for row in answer["devices"]}
        if "d00" not in devices or "d01" not in devices:
            return None  # a device has a row once polled
        return devices if devices["d01"]["status"] == "failing" and devices["d00"]["status"] == "good" else None

    devices = await _until(failing)
    assert devices["d01"]["problem"] == "err_register"
    assert devices["d00"]["power_param"] == "133" and devices["d00"]["power_w"] > 0
    assert devices["d00"]["complete_hour"] is None  # no 15-minute rollups in this database yet


async def test_hostile_profile_text_goes_out_as_json_data_and_the_page_has_a_strict_policy(tmp_path, session) -> None:
    profile = tmp_path / "hostile.yaml"
    profile.write_text(
        "name: hostile\nfunction: 3\nbyte_order: big\nword_order: big\naddress_base: 0\nparams:\n"
        f"  - {{id: 133, address: 65, type: float32, unit: W, acronym: P_TOT, descr_eng: {json.dumps(HOSTILE)}, "
        f"descr_ita: {json.dumps(HOSTILE)}}}\n", encoding="utf-8")
    async with running_site(tmp_path, devices=[{"id": "d-0:1.x_", "unit": 1, "profile": "hostile.yaml"}],
                            units=(1,)) as running:
        await _until(lambda: stored(running, "SELECT 1 FROM see000Last"))
        status, headers, body = await _get(session, running.url + "api/last?device=d-0:1.x_")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["values"][0]["descr_eng"] == HOSTILE
        _, headers, page = await _get(session, running.url)
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        script = (await _get(session, running.url + "static/app.js"))[2]
        assert not any(sink in script for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"eval("))


async def test_a_port_in_use_is_one_clear_error_naming_the_address(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SUSEE_HTTP__LISTEN")  # the address under test comes from the file
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        site = load_site(str(write_config(tmp_path, 1502, [{"id": "d00"}], {"listen": address})))
        view = LiveView(site.settings, site.plans)
        supervisor = Supervisor(site.settings, site.plans, create_sink(site.settings.database_target(), "000"),
                                handle_signals=False, observe=view.tap.wrap)
        with pytest.raises(ConfigError, match=f"http.listen {address}: cannot listen: .*in use"):
            async with view.serving(view.site_state(supervisor)):
                pass
