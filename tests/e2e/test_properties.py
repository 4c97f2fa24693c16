"""Property-based requests to a live server: arbitrary JSON, strings and headers never get a 5xx,
never hang past the deadline, and the server answers a normal request right after each one.

A real uvicorn server on 127.0.0.1 serves a text model (the session's ``small_model``, default ONNX
backend, model worker process) with ``timeout_s=5``, from an AIMASS_HOME of this module's own
(jobs queued here never run: ``job_runner=0``, and no other test's runner sees this home).

Bodies are sent as raw bytes, so what reaches the server is exactly what was generated: lone
surrogates travel as ``\\udXXX`` JSON escapes (or as invalid UTF-8), NaN and Infinity as Python's
``json`` writes them. Header values are generated as bytes that an HTTP/1.1 client may send
(no NUL, CR, LF; see h11's ``field_value``), so nothing is refused client-side. Deploys with a real
model go to a scratch service (or a service name that is invalid), so that the fuzzing cannot set
the served version's own deadline to a microsecond and make the next normal request a 504 by
design.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from tests.conftest import live_server

from aimass import api
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.serve.batching import BatchSettings

SERVICE = "prop-news"
SCRATCH = "prop-scratch"
TIMEOUT_S = 5.0  # the server's deadline per request
CLIENT_S = TIMEOUT_S + 5  # a predict answer later than this is a hang
MANAGE_S = 60.0  # a deploy loads and warms a version: not bound by the request deadline
TEXT = "The striker scored twice as United won the cup final."
MAX_ITEMS, MAX_CHARS, MAX_BODY = 256, 20_000, 2 * 1024 * 1024  # the text task's documented limits
# Management examples change the server's state (keys, jobs, services), so a failure can depend on
# earlier examples: no shrinking there (it would report a "minimal" example that only failed
# because of the state an earlier one left), and deploys are slow to repeat anyway.
MANAGE_PHASES = [Phase.explicit, Phase.generate]
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def srv(small_model, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIMASS_HOME", str(tmp_path_factory.mktemp("properties-home")))
        record = api.register(small_model, SERVICE)
        for _ in range(2):  # versions 2 and 3, for canaries in a scratch service
            api.register(small_model, SERVICE)
        _, predict_key = auth.create_key("prop-p", ["predict"])
        _, manage_key = auth.create_key("prop-m", ["manage"])
        app = create_app([record.ref], BatchSettings(timeout_s=TIMEOUT_S), job_runner=0)
        with live_server(app) as base, httpx.Client(base_url=base) as client:
            yield SimpleNamespace(
                base=base,
                ref=record.ref,
                client=client,
                pk={"Authorization": f"Bearer {predict_key}"},
                mk={"Authorization": f"Bearer {manage_key}"},
            )


# ------------------------------------------------------------------ strategies
SPECIAL = [
    "\x00",  # NUL
    "\u200f",  # right-to-left mark
    "\u202e",  # right-to-left override
    "\u200b",  # zero-width space
    "\ufeff",  # byte order mark
    "\U0001f600",  # outside the BMP (a surrogate pair in JSON escapes)
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "\udbff\udc00",  # a pair: JSON decodes it to one valid character
    "\x1c",  # Python's str.strip() takes it for whitespace
    " \t\n",
]
any_char = st.characters(exclude_categories=())  # every code point, surrogates included
pieces = st.one_of(st.sampled_from(SPECIAL), st.text(any_char, min_size=1, max_size=8))
big = st.builds(
    lambda piece, size: (piece * (size // len(piece) + 1))[:size],
    pieces,
    st.sampled_from([MAX_CHARS - 1, MAX_CHARS, MAX_CHARS + 1, 200_000, 1_000_000]),
)
strings = st.one_of(
    st.lists(pieces, max_size=6).map("".join),
    st.text(any_char, max_size=200),
    big,
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(any_char, max_size=30),
    st.sampled_from(SPECIAL),
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(any_char, max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"{",
            b"\xff\xfe{}",
            b"\xef\xbb\xbf{}",
            b"1" * 5000,
            b"[" * 50_000 + b"]" * 50_000,
        ]
    ),
)


def to_bytes(value, ascii_only: bool) -> bytes:
    """``value`` as JSON bytes: escapes only (lone surrogates as ``\\udXXX``), or raw UTF-8 (a lone
    surrogate then makes invalid UTF-8, as a careless client writes it)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


json_bodies = st.one_of(
    st.builds(to_bytes, json_values, st.booleans()),
    st.builds(to_bytes, st.fixed_dictionaries({"inputs": json_values}), st.booleans()),
    st.builds(
        to_bytes,
        st.fixed_dictionaries({"inputs": st.lists(strings, max_size=4)}, optional={"extra": json_values}),
        st.booleans(),
    ),
    raw_bodies,
)

PRINTABLE = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"  # VCHAR, SP, HTAB, obs-text
SENDABLE_BYTES = bytes(b for b in range(1, 256) if b not in b"\n\r\x0b\x0c")  # control bytes too
SENDABLE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")  # h11's field_value: what httpx sends


def header_values(prefixes: list[bytes]) -> st.SearchStrategy[bytes]:
    """Header values an HTTP/1.1 client can send, some starting with ``prefixes``: mostly printable
    (what reaches the app), some with control bytes (uvicorn's parser refuses those itself)."""

    def tail(alphabet: bytes) -> st.SearchStrategy[bytes]:
        return st.binary(max_size=120).map(lambda b: bytes(alphabet[x % len(alphabet)] for x in b))

    tails = st.one_of(tail(PRINTABLE), tail(PRINTABLE), tail(PRINTABLE), tail(SENDABLE_BYTES))
    value = st.builds(lambda p, t: (p + t).strip(b" \t"), st.sampled_from([b"", *prefixes]), tails)
    return value.filter(SENDABLE.fullmatch)


# ------------------------------------------------------------------ helpers
def send(srv, method: str, path: str, body: bytes, headers: dict, timeout: float) -> httpx.Response:
    """One request; its answer must be no 5xx and must come within ``timeout`` (a hang otherwise)."""
    began = time.monotonic()
    try:
        response = srv.client.request(method, path, content=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        pytest.fail(f"{method} {path} hung past {timeout}s: headers={headers!r} body={body[:300]!r}")
    seconds = time.monotonic() - began
    assert response.status_code < 500, (
        f"{method} {path} -> {response.status_code} in {seconds:.2f}s: {response.text[:500]}\n"
        f"headers={headers!r}\nbody={body[:500]!r}"
    )
    event(f"{method} {response.status_code}")
    if "x-request-id" not in response.headers:  # only uvicorn's own answer to what its parser refuses
        assert (response.status_code, response.text) == (400, "Invalid HTTP request received."), response
    return response


def still_serves(srv) -> None:
    """A normal request right after: 200 with one prediction."""
    response = srv.client.post(
        f"/v1/models/{SERVICE}/predict", json={"inputs": [TEXT]}, headers=srv.pk, timeout=CLIENT_S
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def expected_predict(body: bytes) -> str:
    """What the documented limits say a JSON body must get: ``200`` or ``4xx``."""
    if len(body) > MAX_BODY:
        return "4xx"
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return "4xx"
    items = payload.get("inputs") if isinstance(payload, dict) else None
    items = [items] if isinstance(items, str) else items
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        return "4xx"
    for text in items:
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_CHARS:
            return "4xx"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "4xx"
    return "200"


def check_predict(srv, body: bytes, headers: dict) -> httpx.Response:
    response = send(srv, "POST", f"/v1/models/{SERVICE}/predict", body, headers, CLIENT_S)
    if response.status_code == 200:
        assert len(response.json()["predictions"]) >= 1
    return response


# ------------------------------------------------------------------ predict
@FUZZ
@given(body=json_bodies)
def test_predict_takes_any_json_body(srv, body):
    response = check_predict(srv, body, {**srv.pk, "content-type": "application/json"})
    want = expected_predict(body)
    got = "200" if response.status_code == 200 else f"{response.status_code // 100}xx"
    assert got == want, f"{response.status_code}: {response.text[:300]} for {body[:300]!r}"
    still_serves(srv)


@FUZZ
@given(texts=st.lists(strings, min_size=1, max_size=3) | strings, ascii_only=st.booleans())
def test_predict_takes_any_string(srv, texts, ascii_only):
    body = to_bytes({"inputs": texts}, ascii_only)
    response = check_predict(srv, body, {**srv.pk, "content-type": "application/json"})
    want = expected_predict(body)
    assert (response.status_code == 200) == (want == "200"), f"{response.status_code}: {response.text[:300]}"
    if response.status_code == 200:
        sent = json.loads(body)["inputs"]
        assert len(response.json()["predictions"]) == (1 if isinstance(sent, str) else len(sent))
    still_serves(srv)


@FUZZ
@given(
    authorization=st.none() | header_values([b"Bearer ", b"bearer am_", b"Basic "]),
    valid_key=st.booleans(),
    content_type=st.none()
    | header_values([b"application/json", b"multipart/form-data; boundary=", b"text/plain; charset="]),
    request_id=st.none() | header_values([]),
    body=st.sampled_from(
        [
            json.dumps({"inputs": [TEXT]}).encode(),
            b"--b\r\nContent-Disposition: form-data; name=inputs; filename=a.txt\r\n\r\nhello\r\n--b--\r\n",
            b"",
        ]
    ),
)
def test_predict_takes_any_header_values(srv, authorization, valid_key, content_type, request_id, body):
    headers = {}
    if valid_key:
        headers["authorization"] = srv.pk["Authorization"].encode()
    elif authorization is not None:
        headers["authorization"] = authorization
    if content_type is not None:
        headers["content-type"] = content_type
    if request_id is not None:
        headers["x-request-id"] = request_id
    response = check_predict(srv, body, headers)
    if "x-request-id" in response.headers:  # the app answered (not uvicorn's parser)
        assert valid_key or response.status_code == 401, response.text
        assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])  # always the server's
        if request_id and all(32 < c < 127 for c in request_id) and request_id == request_id[:64]:
            assert response.headers["x-client-request-id"] == request_id.decode()
    still_serves(srv)


# ------------------------------------------------------------------ management
NASTY = [  # values that break servers: each is drawn often, not left to chance
    *("\ud800", "a\udfffb", "\x00", "a\x00b", "\u202eabc", "\ufeff", "", " ", "\U0001f600", "x" * 10_000),
    *(math.inf, -math.inf, math.nan, 1e308, -0.0, 5e-324, 10**30, 2**63, -(2**63) - 1, 0, -1),
    *(None, True, False, [], {}, [None], {"": None}),
]
odd = st.one_of(
    st.sampled_from(NASTY), st.sampled_from(NASTY), leaves, st.lists(pieces, max_size=4).map("".join)
)


def mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` two times in three, else an odd value (a lone surrogate, NaN, Infinity, 2**63 ...)."""
    return st.one_of(valid, valid, odd)


def json_of(structured: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """Bodies for a route: mostly its own shape with odd values in it (as JSON escapes, or now and
    then as raw UTF-8), sometimes anything at all."""
    shaped = st.builds(to_bytes, structured, st.sampled_from([True, True, True, False]))
    return st.one_of(shaped, shaped, shaped, json_bodies)


MODELS = st.one_of(
    st.sampled_from(
        [f"{SERVICE}:1", SERVICE, f"{SERVICE}@production", f"{SERVICE}:0", f"{SERVICE}:99999999999999999999"]
        + ["nope:1", "../../etc/passwd", "", "a" * 200, "x:-1", "x:١", "x@", "@y"]
    ),
    st.text(any_char, max_size=40),
)
SETTINGS = ["max_batch_size", "max_wait_ms", "max_queue", "timeout_s", "backend", "workers", "nope"]
setting_values = st.one_of(
    leaves,
    st.sampled_from(
        [0, 1, 1024, 1025, -1, 0.0, 1e-9, 3600, 3601, 1e309, "onnx", "thread", "process", "torch"]
    ),
)
deploy_bodies = st.fixed_dictionaries(
    {"model": MODELS},
    optional={
        "service": st.sampled_from([SCRATCH, "", "-x", "a b", "ü", "x\n", "a" * 101]),
        "weight": st.one_of(leaves, st.integers(-5, 105)),
        "settings": st.one_of(leaves, st.dictionaries(st.sampled_from(SETTINGS), setting_values, max_size=4)),
    },
)


valid_settings = st.fixed_dictionaries(
    {},
    optional={
        "max_batch_size": st.integers(1, 1024),
        "max_wait_ms": st.floats(0, 1000),
        "max_queue": st.integers(1, 1_000_000),
        "timeout_s": st.floats(0.001, 3600),
        "backend": st.sampled_from(["auto", "onnx", "onnx-int8"]),
        "workers": st.sampled_from(["process", "thread"]),
    },
)
scratch_deploys = st.fixed_dictionaries(  # mostly valid: deploys and re-weights the scratch service
    {"model": st.sampled_from([f"{SERVICE}:1", SERVICE]), "service": st.just(SCRATCH)},
    optional={"weight": st.integers(0, 100), "settings": valid_settings},
)


def manage(srv, method: str, path: str, body: bytes) -> httpx.Response:
    return send(srv, method, path, body, {**srv.mk, "content-type": "application/json"}, MANAGE_S)


def still_lists(srv, path: str, after: bytes) -> None:
    """What a management request stored must not break the route that lists it."""
    response = srv.client.get(path, headers=srv.mk, timeout=MANAGE_S)
    assert response.status_code == 200, f"GET {path} -> {response.status_code} after {after[:300]!r}"


@settings(FUZZ, max_examples=50, phases=MANAGE_PHASES)
@given(body=json_of(deploy_bodies | scratch_deploys))
def test_deploy_takes_any_body(srv, body):
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if (
        isinstance(payload, dict)
        and payload.get("service") in (None, SERVICE)
        and SERVICE in str(payload.get("model"))
    ):
        payload["service"] = SCRATCH  # never the service under test (see the module's docstring)
        body = to_bytes(payload, True)
    manage(srv, "POST", "/v1/services", body)
    still_lists(srv, "/v1/services", body)
    still_serves(srv)


@settings(FUZZ, max_examples=10, phases=MANAGE_PHASES)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from([1, 2, 3]), st.none() | st.integers(0, 100)), min_size=1, max_size=4
    )
)
@example(steps=[(1, None), (2, 50), (3, 33)])  # a canary of 33% beside two versions at 50%
@example(steps=[(1, None), (1, 10)])  # the only version given 10% of the traffic
def test_deploys_keep_traffic_weights_at_100(srv, steps):
    """Canaries and re-weights through ``POST /v1/services`` (three versions, a scratch service)
    leave whole percentages that add up to 100, and the service answers."""
    for version, weight in steps:  # workers "thread": a version retired and deployed again loads fast
        body = {"model": f"{SERVICE}:{version}", "service": SCRATCH, "settings": {"workers": "thread"}}
        if weight is not None:
            body["weight"] = weight
        response = manage(srv, "POST", "/v1/services", to_bytes(body, True))
        assert response.status_code == 200, response.text
        weights = {v["ref"]: v["weight"] for v in response.json()["versions"]}
        assert sum(weights.values()) == 100, f"{steps}: {weights}"
    answer = srv.client.post(
        f"/v1/models/{SCRATCH}/predict", json={"inputs": [TEXT]}, headers=srv.pk, timeout=CLIENT_S
    )
    assert answer.status_code == 200, answer.text
    still_serves(srv)


@settings(FUZZ, max_examples=80, phases=MANAGE_PHASES)
@given(
    name=st.sampled_from([SERVICE, SCRATCH, "nope", "a" * 300, "%00", "..", "x:1"]) | st.text(max_size=20),
    weights=st.one_of(
        st.dictionaries(
            st.sampled_from([f"{SERVICE}:1", f"{SCRATCH}:1", "nope:1", "", "\ud800"])
            | st.text(any_char, max_size=10),
            mostly(st.integers(0, 100)),
            max_size=3,
        ),
        json_values,
    ),
)
def test_traffic_takes_any_body(srv, name, weights):
    path = f"/v1/services/{quote(name, safe='')}/traffic"
    manage(srv, "PUT", path, to_bytes(weights, True))
    still_lists(srv, "/v1/services", path.encode())
    still_serves(srv)


key_bodies = st.fixed_dictionaries(
    {
        "name": mostly(st.text(max_size=20)),
        "scopes": mostly(st.lists(st.sampled_from(["predict", "manage"]), min_size=1, max_size=2)),
    },
    optional={"rate_limit": mostly(st.floats(0.001, 1e6))},
)


@settings(FUZZ, max_examples=80, phases=MANAGE_PHASES)
@given(body=json_of(key_bodies))
def test_key_creation_takes_any_body(srv, body):
    response = manage(srv, "POST", "/v1/keys", body)
    if response.status_code == 200:  # the key it made works, for what its scopes allow
        made = response.json()
        scopes = made["scopes"]
        assert set(scopes) <= {"predict", "manage"}, made
        check = srv.client.get(
            "/v1/models", headers={"Authorization": f"Bearer {made['key']}"}, timeout=CLIENT_S
        )
        assert check.status_code == (200 if "predict" in scopes else 403), check.text
    still_lists(srv, "/v1/keys", body)
    still_serves(srv)


job_bodies = st.fixed_dictionaries(
    {
        "kind": mostly(st.sampled_from(["import", "train", "evaluate", "compress", "auto"])),
        "params": mostly(
            st.fixed_dictionaries(
                {
                    "model": mostly(st.sampled_from([f"{SERVICE}:1", SERVICE])),
                    "data": mostly(st.sampled_from(["news", "/tmp/news.csv"])),
                    "path": mostly(st.sampled_from(["/tmp/news.csv", "/tmp"])),
                },
                optional={"name": odd, "time_budget": mostly(st.sampled_from(["10m", "1h"])), "extra": odd},
            )
        ),
    },
    optional={"timeout_s": mostly(st.floats(1, 3600))},
)
auto_bodies = st.fixed_dictionaries(
    {"path": mostly(st.sampled_from(["/tmp/news.csv", "/tmp"]))},
    optional={
        "time_budget": mostly(st.sampled_from(["10m", "1h", "30s"])),
        "name": mostly(st.sampled_from(["news", "auto-news"])),
        "deploy": mostly(st.booleans()),
    },
)


@settings(FUZZ, max_examples=80, phases=MANAGE_PHASES)
@given(body=json_of(job_bodies))
def test_job_submission_takes_any_body(srv, body):
    """Queued jobs never run here (``job_runner=0``); what is queued must still list."""
    response = manage(srv, "POST", "/v1/jobs", body)
    assert response.status_code in (202, 400, 403, 404, 413, 422), response.text
    still_lists(srv, "/v1/jobs", body)
    still_serves(srv)


@settings(FUZZ, max_examples=50, phases=MANAGE_PHASES)
@given(body=json_of(auto_bodies))
def test_auto_submission_takes_any_body(srv, body):
    response = manage(srv, "POST", "/v1/auto", body)
    # 403: a path outside AIMASS_HOME/uploads and AIMASS_DATA_ROOTS
    assert response.status_code in (202, 400, 403, 404, 413, 422), response.text
    still_lists(srv, "/v1/jobs", body)
    still_serves(srv)


since_values = st.one_of(
    st.builds(
        lambda when, zone: when.isoformat() + zone,
        st.one_of(st.datetimes(), st.sampled_from([datetime.min, datetime.max])),
        st.sampled_from(["", "Z", "+00:00", "+23:59", "-23:59", "+05:30"]),
    ),
    st.dates().map(str),
    st.text(any_char, max_size=30),
)


@settings(FUZZ, max_examples=80, phases=MANAGE_PHASES)
@given(since=st.none() | since_values, key=st.none() | st.text(any_char, max_size=20))
def test_usage_takes_any_query(srv, since, key):
    query = "&".join(
        f"{k}={quote(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in [("since", since), ("key", key)]
        if v is not None
    )
    response = send(srv, "GET", f"/v1/usage?{query}", b"", srv.mk, MANAGE_S)
    assert response.status_code in (200, 400, 422), response.text
    still_serves(srv)


# ------------------------------------------------ every field, every nasty value
# Random bodies rarely put one of the values that break servers in the one field that is stored
# or echoed; this sweep does it for each field of each management body (the rest of the body
# valid), deterministically. It runs last: what it stores may break a listing for the rest of
# the module's life, and it says so once, naming the request that did it.
KEY = object()  # "the dict's key itself" (traffic weights are keyed by version)
SWEEP_VALUES = [
    "\ud800",
    "a\x00b",
    "",
    "x" * 10_000,
    math.inf,
    -math.inf,
    math.nan,
    10**30,
    -1,
    None,
    True,
    [],
]
SWEEP = {
    "POST /v1/keys": (
        {"name": "sweep", "scopes": ["predict"], "rate_limit": 5.0},
        [("name",), ("scopes",), ("scopes", 0), ("rate_limit",), ("extra",)],
        "/v1/keys",
    ),
    "POST /v1/jobs": (
        {"kind": "evaluate", "params": {"model": f"{SERVICE}:1"}, "timeout_s": 60.0},
        [("kind",), ("params",), ("params", "model"), ("params", "extra"), ("timeout_s",)],
        "/v1/jobs",
    ),
    "POST /v1/auto": (
        {"path": "/tmp/news.csv", "time_budget": "10m", "name": "auto-news", "deploy": False},
        [("path",), ("time_budget",), ("name",), ("deploy",)],
        "/v1/jobs",
    ),
    "POST /v1/services": (
        {"model": f"{SERVICE}:1", "service": SCRATCH, "weight": 50, "settings": {"max_batch_size": 8}},
        [
            ("model",),
            ("service",),
            ("weight",),
            ("settings",),
            ("settings", "max_batch_size"),
            ("settings", "timeout_s"),
        ],
        "/v1/services",
    ),
    f"PUT /v1/services/{SCRATCH}/traffic": (
        {f"{SERVICE}:1": 100},
        [(f"{SERVICE}:1",), (KEY,)],
        "/v1/services",
    ),
}


def with_value(body: dict, where: tuple, value):
    """A deep copy of ``body`` with ``value`` at ``where`` (or, for ``(KEY,)``, as its only key)."""
    body = json.loads(json.dumps(body))
    if where == (KEY,):
        return {value: 100} if isinstance(value, str) else None
    *parents, last = where
    target = body
    for step in parents:
        target = target[step]
    target[last] = value
    return body


@pytest.mark.parametrize("route", list(SWEEP))
def test_every_field_takes_every_nasty_value(srv, route):
    template, fields, listing = SWEEP[route]
    method, path = route.split(" ", 1)
    problems = []
    lists = srv.client.get(listing, headers=srv.mk, timeout=MANAGE_S).status_code == 200
    if not lists:
        problems.append(f"GET {listing} was already failing before this sweep (see the other sweeps)")
    for where in fields:
        for value in SWEEP_VALUES:
            body = with_value(template, where, value)
            if body is None or (where == ("service",) and value is None):  # None: the served service
                continue
            raw = to_bytes(body, True)
            try:
                response = srv.client.request(
                    method,
                    path,
                    content=raw,
                    headers={**srv.mk, "content-type": "application/json"},
                    timeout=MANAGE_S,
                )
            except httpx.TimeoutException:
                problems.append(f"{route} {raw[:200]!r} -> no answer in {MANAGE_S}s")
                continue
            if response.status_code >= 500:
                problems.append(f"{route} {raw[:200]!r} -> {response.status_code} {response.text[:200]}")
            if lists and srv.client.get(listing, headers=srv.mk, timeout=MANAGE_S).status_code != 200:
                lists = False
                problems.append(f"GET {listing} fails from the request {route} {raw[:200]!r} on")
    still_serves(srv)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


USAGE_QUERIES = [
    {"since": "9999-12-31T23:59:59-23:59"},  # a valid ISO time, past year 9999 in UTC
    {"since": "0001-01-01T00:00:00+23:59"},  # ... before year 1 in UTC
    {"since": "9999-12-31"},
    {"since": "0001-01-01"},
    {"since": "2026-11-22T09:30Z"},
    {"since": "\x00"},
    {"since": "x" * 10_000},
    {"key": "\x00"},
    {"key": "x" * 10_000},
]


def test_usage_takes_edge_queries(srv):
    problems = []
    for query in USAGE_QUERIES:
        response = srv.client.get("/v1/usage", params=query, headers=srv.mk, timeout=MANAGE_S)
        if response.status_code not in (200, 422):
            problems.append(f"GET /v1/usage {query} -> {response.status_code} {response.text[:200]}")
    still_serves(srv)
    assert not problems, "\n".join(problems)
