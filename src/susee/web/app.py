"""The HTTP endpoint: live page, JSON API, health checks and metrics (aiohttp).

Read-only: only GET and HEAD are answered. With ``http.token`` every path
but ``/healthz`` needs it, as a bearer token or as the basic-auth password
(any user name), compared in constant time. Pages carry a strict Content
Security Policy: scripts and styles only from the package's own files, so
a device id can never run as code even if it got past the page's escaping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import time
from importlib import resources

from aiohttp import web
from pydantic import SecretStr

from susee.quality import describe
from susee.sinks import SinkError
from susee.web.consumption import Consumption
from susee.web.metrics import exposition, site_registry
from susee.web.reads import Reads, SeriesRequestError
from susee.web.state import Fleet

log = logging.getLogger(__name__)

STATIC = resources.files("susee.web") / "static"
READ_METHODS = frozenset({"GET", "HEAD"})
OPEN_PATHS = frozenset({"/healthz"})  # liveness carries no data: container health checks need no token
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATE_KEY = web.AppKey("state", Fleet)
READS_KEY = web.AppKey("reads", Reads)
TOKEN_KEY = web.AppKey("token", object)
REGISTRY_KEY = web.AppKey("registry", object)
LAG_KEY = web.AppKey("rollup_lag", list)
CONSUMPTION_KEY = web.AppKey("consumption", Consumption)


def authorized(header: str | None, token: SecretStr | None) -> bool:
    """True without a token, or when ``header`` carries it (Bearer, or Basic with it as the password)."""
    if token is None:
        return True
    if not header:
        return False
    scheme, _, credentials = header.partition(" ")
    given = b""
    if scheme.lower() == "bearer":
        given = credentials.strip().encode()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        given = decoded.partition(b":")[2]
    return hmac.compare_digest(given, token.get_secret_value().encode())


@web.middleware
async def guard(request: web.Request, handler):
    """Read-only, token-checked, with the security headers on every answer."""
    if request.method not in READ_METHODS:
        response: web.StreamResponse = web.json_response({"error": "read-only: only GET and HEAD"}, status=405,
                                                         headers={"Allow": "GET, HEAD"})
    elif request.path not in OPEN_PATHS and not authorized(request.headers.get("Authorization"),
                                                          request.app[TOKEN_KEY]):
        response = web.json_response({"error": "a token is required (Bearer, or the basic-auth password)"},
                                     status=401, headers={"WWW-Authenticate": 'Basic realm="susee", charset="UTF-8"'})
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 4xx/5xx answers get the same headers
            exc.headers.update(SECURITY_HEADERS)
            raise
    response.headers.update(SECURITY_HEADERS)
    return response


def build_app(state: Fleet, reads: Reads, token: SecretStr | None, consumption: Consumption) -> web.Application:
    """The application: routes for the page, the API, health and metrics."""
    app = web.Application(middlewares=[guard])
    app[STATE_KEY] = state
    app[READS_KEY] = reads
    app[CONSUMPTION_KEY] = consumption
    app[TOKEN_KEY] = token
    app[LAG_KEY] = [None]
    app[REGISTRY_KEY] = site_registry(state, lambda: app[LAG_KEY][0])
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/site", api_site)
    app.router.add_get("/api/devices", api_devices)
    app.router.add_get("/api/last", api_last)
    app.router.add_get("/api/device", api_device)
    app.router.add_get("/api/series", api_series)
    return app


# --- page and assets ---

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


async def page(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES or not (STATIC / name).is_file():
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=STATIC_TYPES[suffix], charset="utf-8")


# --- health ---

async def healthz(request: web.Request) -> web.Response:
    """200 while the loop answers (it just did) and the service is not stopping."""
    if request.app[STATE_KEY].stopping:
        return web.json_response({"status": "stopping"}, status=503)
    return web.json_response({"status": "ok"})


def readiness(site) -> list[str]:
    """Why the site is not ready (empty list: ready)."""
    reasons = list(site.notes)
    if site.stopping:
        reasons.append("the service is stopping")
    if not site.online and site.paused:
        reasons.append("rows have nowhere to go: the database is offline and the spool does not accept rows")
    elif site.paused:
        reasons.append("acquisition is paused: the spool does not accept rows")
    if site.last_poll_s is None:
        reasons.append("no device has been polled yet")
    elif site.now_s - site.last_poll_s > 2 * site.period_s:
        reasons.append(f"no device polled in the last two periods ({2 * site.period_s:g} s); "
                       f"newest tick {site.now_s - site.last_poll_s:.0f} s ago")
    return reasons


async def readyz(request: web.Request) -> web.Response:
    """200 while rows have a place to go and a device was polled within two periods; else 503 saying why."""
    state = request.app[STATE_KEY]
    await state.refresh()
    site = state.site()
    reasons = readiness(site)
    body = {"ready": not reasons, "reasons": reasons, "database_online": site.online,
            "newest_tick_age_s": None if site.last_poll_s is None else round(site.now_s - site.last_poll_s, 3)}
    return web.json_response(body, status=503 if reasons else 200)


# --- metrics ---

async def metrics(request: web.Request) -> web.Response:
    app = request.app
    state = app[STATE_KEY]
    await state.refresh()
    if state.database_online:
        try:
            app[LAG_KEY][0] = await app[READS_KEY].rollup_lag_s(time.time())
        except SinkError:
            pass  # keep the last known lag; the database state has its own metric
    # In a thread: at 5,000 devices the exposition takes ~50 ms of CPU; there it shares the
    # interpreter with the polls in 5 ms slices instead of holding the loop (and their Delay) for all of it.
    body = await asyncio.to_thread(exposition, app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


# --- JSON API ---

async def api_site(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    await state.refresh()
    site = state.site()
    return _json({
        "version": site.version, "started": site.started_s, "now": site.now_s, "uptime_s": site.now_s - site.started_s,
        "period_s": site.period_s, "database": site.database, "online": site.online,
        "outage_since": site.outage_since_s, "paused": site.paused, "queue_rows": site.queue_rows,
        "rows_written": site.rows_written, "rows_spooled": site.rows_spooled, "rows_replayed": site.rows_replayed,
        "rows_dropped": site.rows_dropped, "spool_rows": site.spool_rows, "spool_bytes": site.spool_bytes,
        "devices": site.devices, "ready_problems": readiness(site),
    })


DEVICE_COLUMNS = ("id", "status", "problem", "code", "last_tick", "last_good", "delay_ms", "power_w", "power_param",
                  "complete_hour", "complete_day", "polls", "missed_ticks", "profile", "tags")


async def api_devices(request: web.Request) -> web.Response:
    """Every device, one compact row each (the fleet table): ``columns`` names the fields of each row.

    Rows are arrays, not objects: at 5,000 devices the answer is half the size
    and encoded in half the time.
    """
    state, reads = request.app[STATE_KEY], request.app[READS_KEY]
    now = time.time()
    await state.refresh()
    completeness = reads.completeness(state.rows_per_s(), now) if state.database_online else {}
    return await asyncio.to_thread(_fleet_answer, state, completeness, now)  # like /metrics: off the loop


def _fleet_answer(state: Fleet, completeness: dict, now: float) -> web.Response:
    none = (None, None)
    rows = [
        (d.id, d.status, d.problem, d.code, d.last_tick_s, d.last_good_s,
         None if d.delay_ms is None else round(d.delay_ms, 1), _number(d.power_w), state.power_param(d.id),
         *completeness.get(d.id, none), d.polls, d.missed_ticks, d.profile, d.tags)
        for d in state.devices()
    ]
    return _json({"now": now, "columns": DEVICE_COLUMNS, "devices": rows})


async def api_last(request: web.Request) -> web.Response:
    """The newest value of each param of one device, from the Last table ("unavailable" while it is away)."""
    state, reads = request.app[STATE_KEY], request.app[READS_KEY]
    device_id = _device_param(request, state)
    values, source = [], "unavailable"
    if state.database_online:
        try:
            values = _described(state, device_id, await reads.last(device_id))
            source = "database"
        except SinkError:
            pass
    return _json({"device": device_id, "source": source, "values": values})


async def api_device(request: web.Request) -> web.Response:
    """One device's page: its fleet row, today's quality strip and 15-minute consumption by tariff band.

    ``consumption`` is None when it cannot be shown; ``consumption_note`` then says why
    (no report extra, no rollups yet, no energy counter, database away).
    """
    state, reads = request.app[STATE_KEY], request.app[READS_KEY]
    device_id = _device_param(request, state)
    strip = None
    await state.refresh()
    if state.database_online:
        try:
            strip = await reads.quality_strip(device_id, time.time())
        except SinkError:
            strip = None
    view = next((d for d in state.devices() if d.id == device_id), None)  # None before the first poll
    plan = state.plan(device_id)
    consumption, note = await request.app[CONSUMPTION_KEY].of(plan, state.database_online)
    return _json({
        "device": device_id, "profile": plan.profile.name if plan.profile else None,
        "status": view.status if view else "waiting", "problem": view.problem if view else "",
        "tags": view.tags if view else {}, "power_param": state.power_param(device_id), "quality": strip,
        "consumption": consumption, "consumption_note": note,
    })


async def api_series(request: web.Request) -> web.Response:
    """Mean of the good values per step of one param; bounded range and points (see reads.series_window)."""
    state, reads = request.app[STATE_KEY], request.app[READS_KEY]
    device_id = _device_param(request, state)
    param_id = request.query.get("param", "")
    plan = state.plan(device_id)
    if plan is None or plan.profile is None or param_id not in plan.param_ids:
        raise _bad_request(f"device {device_id!r} has no param {param_id!r}")
    now = time.time()
    try:
        from_s = float(request.query.get("from", (now // 86400) * 86400))
        to_s = float(request.query.get("to", now))
        step = float(request.query["step"]) if "step" in request.query else None
        series = await reads.series(device_id, param_id, from_s, to_s, step)
    except (SeriesRequestError, ValueError) as exc:
        raise _bad_request(str(exc)) from None
    except SinkError:
        raise web.HTTPServiceUnavailable(text=json.dumps({"error": "the database is not reachable"}),
                                         content_type="application/json") from None
    return _json({"device": device_id, "param": param_id, "from": series.from_s, "to": series.to_s,
                  "step_s": series.step_s, "points": series.points})


def _described(state: Fleet, device_id: str, rows: list[tuple]) -> list[dict]:
    plan = state.plan(device_id)
    specs = plan.profile.by_id if plan is not None and plan.profile is not None else {}
    values = []
    for param_id, date, value, delay, code in rows:
        spec = specs.get(param_id)
        values.append({
            "param": param_id, "acronym": spec.acronym if spec else "", "descr_eng": spec.descr_eng if spec else "",
            "descr_ita": spec.descr_ita if spec else "", "unit": spec.unit if spec else "", "value": _number(value),
            "code": int(code), "code_text": describe(int(code)), "date": str(date),
            "delay_ms": None if delay is None else round(float(delay), 1),
        })
    return values


def _device_param(request: web.Request, state: Fleet) -> str:
    device_id = request.query.get("device", "")
    if state.plan(device_id) is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such device"}), content_type="application/json")
    return device_id


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _json(body: dict) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), content_type="application/json")
