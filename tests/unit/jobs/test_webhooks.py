"""Webhooks: the official client manages endpoints over REST, a real HTTP receiver gets each job's
event signed as Standard Webhooks (the client's own ``unwrap``/``verify_signature`` check it), a
failed delivery is sent again with the same id, a rotated secret signs beside the old one, and an
endpoint only hears of jobs its creator's key may read."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from tests.conftest import live_server

from aimass import jobs, paths
from aimass.access import directory
from aimass.jobs import webhooks
from aimass.serve import auth
from aimass.serve.app import create_app


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every request and answers ``codes`` in turn (then 200)."""

    def __init__(self, hold=None):
        self.got: list[dict] = []
        self.codes: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 — http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                owner.got.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if hold is not None:
                    hold()
                self.send_response(owner.codes.pop(0) if owner.codes else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/aimass"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(tmp_path, monkeypatch):
    """A receiver, and a home of this test's own: no other test's runner sends to it."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIMASS_WEBHOOK_ALLOW", "127.0.0.1")  # the operator lets this machine be sent to
    found = Receiver()
    yield found
    found.close()


def table(name: str, rows: int = 12) -> str:
    folder = paths.home() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    path.write_text("text,label\n" + "".join(f"{name} row {i},{'ab'[i % 2]}\n" for i in range(rows)))
    return str(path)


def events_of(got: list[dict]) -> list[dict]:
    return [json.loads(g["body"]) for g in got]


def test_the_openai_client_manages_endpoints_and_each_job_event_arrives_signed(receiver):
    with live_server(create_app([])) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=auth.admin_token(), max_retries=0)
        assert {"batch.completed", "fine_tuning.job.succeeded", "job.failed"} <= set(
            client.webhooks.event_types.list().data
        )
        for bad, param in (
            ({"url": "file:///etc/passwd", "event_types": ["job.failed"]}, "url"),
            ({"url": receiver.url, "event_types": ["response.completed"]}, "event_types"),
        ):
            with pytest.raises(openai.BadRequestError) as err:
                client.webhooks.create(name="bad", **bad)
            assert err.value.param == param, err.value.body
        made = client.webhooks.create(
            name="ci", url=receiver.url, event_types=["job.succeeded", "job.failed"]
        )
        secret = made.signing_secret
        assert secret.startswith("whsec_") and made.signing_secret_hint == f"whsec_...{secret[-4:]}"
        shown = client.webhooks.retrieve(made.id)
        assert not hasattr(shown, "signing_secret") or shown.signing_secret is None
        assert [e.id for e in client.webhooks.list()] == [made.id]

        # the official client's test delivery, checked and parsed by the client itself
        tried = client.webhooks.test(made.id, event_type="batch.completed")
        assert (tried.status_code, tried.event_type) == (200, "batch.completed")
        sample = receiver.got.pop()
        event = client.webhooks.unwrap(sample["body"], sample["headers"], secret=secret)
        assert event.type == "batch.completed" and event.data.id == "job_test"
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.unwrap(sample["body"], sample["headers"], secret="whsec_" + "A" * 44)

        good = jobs.submit("import", {"path": table("hooked"), "name": "hooked"}, metadata={"team": "ci"})
        bad = jobs.submit("import", {"path": str(paths.home() / "uploads" / "missing.csv")})
        assert jobs.run_foreground(good["id"])["status"] == "succeeded"
        assert jobs.run_foreground(bad["id"])["status"] == "failed"
        deliverer = webhooks.Deliverer()
        assert deliverer.tick() == 2 and deliverer.tick() == 0  # once each
        for got in receiver.got:
            client.webhooks.verify_signature(got["body"], got["headers"], secret=secret)
            assert got["path"] == "/hooks/aimass" and got["headers"]["webhook-id"].startswith("evt_")
        sent = {e["data"]["id"]: e for e in events_of(receiver.got)}
        assert sent[good["id"]]["type"] == "job.succeeded" and sent[good["id"]]["data"]["metadata"] == {
            "team": "ci"
        }
        assert sent[bad["id"]]["type"] == "job.failed" and "missing.csv" in sent[bad["id"]]["data"]["message"]

        # an answer other than 2xx: sent again when due, with the same event id
        receiver.got.clear()
        receiver.codes = [500]
        again = jobs.submit("import", {"path": table("retried"), "name": "retried"})
        jobs.run_foreground(again["id"])
        assert deliverer.tick() == 1
        listed = httpx.get(
            f"{base}/v1/webhook_endpoints/{made.id}/deliveries",
            headers={"Authorization": f"Bearer {auth.admin_token()}"},
        ).json()["data"]
        assert (listed[0]["status"], listed[0]["attempts"], listed[0]["last_status"]) == ("pending", 1, 500)
        assert deliverer.tick() == 0  # not due for 5 s
        later = webhooks.Deliverer(clock=lambda: time.time() + webhooks.BACKOFF_S[0] + 1)
        assert later.send_due() == 1
        first, second = receiver.got
        assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
        assert webhooks.deliveries(made.id)[0]["status"] == "delivered"

        # a rotated secret that keeps the old one for a day: both sign, so either checks
        rotated = client.webhooks.rotate_secret(made.id, keep_old_secret_active_for_24_hours=True)
        assert rotated.signing_secret != secret
        renamed = client.webhooks.update(made.id, name="ci-2", event_types=["job.started"])
        assert renamed.name == "ci-2" and renamed.event_types == ["job.started"]
        receiver.got.clear()
        jobs.run_foreground(jobs.submit("import", {"path": table("rotated"), "name": "rotated"})["id"])
        assert deliverer.tick() == 1
        (got,) = receiver.got
        assert json.loads(got["body"])["type"] == "job.started"
        assert got["headers"]["webhook-signature"].count("v1,") == 2
        for key in (secret, rotated.signing_secret):
            client.webhooks.verify_signature(got["body"], got["headers"], secret=key)

        assert client.webhooks.delete(made.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.webhooks.retrieve(made.id)
        _, predict_only = auth.create_key("reader", ["predict"])
        reader = openai.OpenAI(base_url=f"{base}/v1", api_key=predict_only, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError):
            reader.webhooks.create(name="x", url=receiver.url, event_types=["job.failed"])


def test_an_endpoint_hears_only_of_jobs_its_creators_key_may_read(receiver):
    """alice's key acts in project nlp: her endpoint is sent the event of the job in nlp, not the
    one in cv; once her key is revoked it is sent nothing more. A dead URL is retried, then failed."""
    directory.create_project("nlp")
    directory.create_project("cv")
    directory.create_user("alice")
    team = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "aimass:project/nlp/*"}]}
    directory.put_policy("nlpTeam", team)
    directory.attach("nlpTeam", "user", "alice")
    record, _ = auth.create_key("alice", ["predict"])
    directory.bind_key(record.id, user="alice")
    hook = webhooks.create("alice", receiver.url, ["job.succeeded"], record.id)
    ids = {}
    for project in ("nlp", "cv"):
        job = jobs.submit("import", {"path": table(f"in-{project}"), "name": f"in-{project}"})
        directory.assign("job", job["id"], project)
        jobs.run_foreground(job["id"])
        ids[project] = job["id"]
    deliverer = webhooks.Deliverer()
    deliverer.tick()
    assert [e["data"]["id"] for e in events_of(receiver.got)] == [ids["nlp"]]
    auth.revoke_key(record.id)
    late = jobs.submit("import", {"path": table("late-nlp"), "name": "late-nlp"})
    directory.assign("job", late["id"], "nlp")
    jobs.run_foreground(late["id"])
    assert deliverer.tick() == 0 and len(receiver.got) == 1

    dead = webhooks.create("dead", "http://127.0.0.1:9/nothing", ["job.succeeded"], auth.ADMIN_ID)
    jobs.run_foreground(jobs.submit("import", {"path": table("unheard"), "name": "unheard"})["id"])
    clock = [time.time()]
    deliverer = webhooks.Deliverer(clock=lambda: clock[0])
    deliverer.collect()
    for _ in range(len(webhooks.BACKOFF_S) + 1):
        assert deliverer.send_due() == 1
        clock[0] += max(webhooks.BACKOFF_S) + 1
    (row,) = webhooks.deliveries(dead["id"])
    assert row["status"] == "failed" and row["attempts"] == len(webhooks.BACKOFF_S) + 1
    assert "ConnectError" in row["last_error"]
    week_later = webhooks.Deliverer(clock=lambda: clock[0] + webhooks.KEEP_S)
    assert week_later.send_due() == 0 and webhooks.deliveries(dead["id"]) == []  # kept a week, then pruned
    assert hook["id"] in [e["id"] for e in webhooks.list_endpoints()]


def test_a_slow_endpoint_holds_up_only_its_own_deliveries(receiver):
    """Two endpoints, the slow one first in line: while it holds its first delivery, the other
    gets both of its own. After its 500, its second waits for the next tick."""
    fast_done, waited = threading.Event(), []
    slow = Receiver(hold=lambda: waited.append(fast_done.wait(5)))  # under the client's 10 s timeout
    slow.codes = [500]
    try:
        webhooks.create("slow", slow.url, ["job.succeeded"], auth.ADMIN_ID)
        webhooks.create("fast", receiver.url, ["job.succeeded"], auth.ADMIN_ID)
        done = [
            jobs.submit("import", {"path": table(f"two-{i}"), "name": f"two-{i}"})["id"] for i in range(2)
        ]
        for job_id in done:
            jobs.run_foreground(job_id)
        deliverer = webhooks.Deliverer()
        assert deliverer.collect() == 4

        original = receiver.server.RequestHandlerClass.do_POST

        def counted(handler):
            original(handler)
            if len(receiver.got) == 2:
                fast_done.set()

        receiver.server.RequestHandlerClass.do_POST = counted
        assert deliverer.send_due() == 3  # the fast endpoint's two, the slow one's first (a 500)
        assert waited == [True]  # the fast endpoint was answered while the slow one held its first
        assert [e["data"]["id"] for e in events_of(receiver.got)] == done  # oldest first
        assert len(slow.got) == 1
        assert deliverer.send_due() == 1 and len(slow.got) == 2  # its second, on the next tick
        assert [e["data"]["id"] for e in events_of(slow.got)] == done
    finally:
        slow.close()


def test_the_job_runner_sends_the_deliveries(receiver):
    webhooks.create("runner", receiver.url, ["job.succeeded"], auth.ADMIN_ID)
    job = jobs.submit("import", {"path": table("by-runner"), "name": "by-runner"})
    stop = threading.Event()
    runner = threading.Thread(target=jobs.Runner(parallel=1, poll_s=0.1).run, kwargs={"stop": stop})
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while not receiver.got and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(60)
    assert [(e["type"], e["data"]["id"]) for e in events_of(receiver.got)] == [("job.succeeded", job["id"])]


def test_the_cli_creates_tests_lists_and_deletes_endpoints(receiver):
    from typer.testing import CliRunner

    from aimass.cli import app

    def run(*args: str, code: int = 0):
        done = CliRunner().invoke(app, ["webhooks", *args, "--json"])
        assert done.exit_code == code, done.output
        return json.loads(done.output)

    made = run("create", receiver.url, "--event", "job.failed", "--event", "batch.failed", "--name", "cli")
    assert made["event_types"] == ["job.failed", "batch.failed"] and made["signing_secret"].startswith(
        "whsec_"
    )
    assert [e["id"] for e in run("list")] == [made["id"]] and "signing_secret" not in run("list")[0]
    tested = run("test", made["id"], "--event", "job.failed")
    assert tested["status_code"] == 200 and json.loads(receiver.got[-1]["body"])["type"] == "job.failed"
    assert (
        "aimass sends no events"
        in run("create", receiver.url, "--event", "job.exploded", code=2)["error"]["message"]
    )
    assert run("rotate", made["id"])["signing_secret"] != made["signing_secret"]
    assert run("deliveries", made["id"]) == []  # a test is not a delivery of an event
    assert run("delete", made["id"])["deleted"] is True
    assert "No webhook endpoint" in run("delete", made["id"], code=2)["error"]["message"]


def test_the_console_adds_tests_shows_and_deletes_an_endpoint(receiver):
    """The Webhooks page: the secret shown once, a test's status code, a job's delivery listed
    as delivered; a bad URL is a 422 naming it; deleting it empties the page."""
    from tests.unit.serve.test_console_gaps import csrf_of, signed_in

    with signed_in(create_app([]), auth.admin_token()) as web:
        page = web.get("/console/webhooks")
        assert page.status_code == 200 and "No endpoints yet." in page.text
        form = {
            "name": "ui",
            "url": receiver.url,
            "event_types": ["job.succeeded"],
            "csrf": csrf_of(page.text),
        }
        made = web.post("/console/webhooks", data=form)
        assert "shown only this once" in made.text
        secret = re.search(r'id="new-secret">(whsec_[^<]+)<', made.text).group(1)
        (hook,) = webhooks.list_endpoints()
        assert "shown only this once" not in web.get("/console/webhooks").text
        tried = web.post(
            f"/console/webhooks/{hook['id']}/test",
            data={"event_type": "job.succeeded", "csrf": csrf_of(made.text)},
        )
        assert f"Sent a test job.succeeded to {hook['id']}: it answered 200." in tried.text
        openai.OpenAI(api_key="x").webhooks.verify_signature(
            receiver.got[-1]["body"], receiver.got[-1]["headers"], secret=secret
        )
        jobs.run_foreground(jobs.submit("import", {"path": table("from-ui"), "name": "from-ui"})["id"])
        webhooks.Deliverer().tick()
        listed = web.get("/console/webhooks").text
        assert "delivered" in listed and "job.succeeded" in listed
        bad = web.post("/console/webhooks", data={**form, "url": "ftp://x"})
        assert bad.status_code == 422 and "http(s) URL" in bad.text
        gone = web.post(f"/console/webhooks/{hook['id']}/delete", data={"csrf": csrf_of(made.text)})
        assert f"Webhook endpoint {hook['id']} deleted." in gone.text and "No endpoints yet." in gone.text


def test_only_public_addresses_are_sent_to_unless_the_operator_allows_more(receiver, monkeypatch):
    """A key that may create endpoints cannot make the server reach its loopback, LAN or a cloud's
    metadata service: every address the host resolves to is checked when the endpoint is made, and
    again before each delivery, which connects to the address checked (the name kept in Host)."""
    monkeypatch.delenv("AIMASS_WEBHOOK_ALLOW")
    port = receiver.server.server_address[1]
    with live_server(create_app([])) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=auth.admin_token(), max_retries=0)
        for url, shown in (
            (receiver.url, "127.0.0.1, a loopback address"),
            (f"http://localhost:{port}/hooks", "127.0.0.1, a loopback address"),
            (f"http://2130706433:{port}/hooks", "127.0.0.1, a loopback address"),  # 127.0.0.1 as a number
            (f"http://[::ffff:127.0.0.1]:{port}/hooks", "a loopback address"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254, a link-local address"),
            ("http://10.0.0.7/hooks", "10.0.0.7, a private address"),
            ("http://0.0.0.0/hooks", "an unspecified address"),
            # IPv6 addresses that carry an IPv4 one: NAT64, 6to4, IPv4-compatible, local-use NAT64
            ("http://[64:ff9b::a9fe:a9fe]/", "a link-local address"),
            (f"http://[2002:7f00:1::]:{port}/hooks", "a loopback address"),
            (f"http://[::7f00:1]:{port}/hooks", "a loopback address"),
            ("http://[64:ff9b:1::a00:7]/", "a shared or reserved address"),
        ):
            with pytest.raises(openai.BadRequestError) as err:
                client.webhooks.create(name="inside", url=url, event_types=["job.failed"])
            assert err.value.param == "url" and shown in err.value.message, (url, err.value.body)
            assert "AIMASS_WEBHOOK_ALLOW" in err.value.message
        assert client.webhooks.list().data == []

        # the operator allows a name: it is sent to at the address checked, the name in Host
        monkeypatch.setenv("AIMASS_WEBHOOK_ALLOW", "localhost, *.example.invalid")
        made = client.webhooks.create(
            name="named", url=f"http://localhost:{port}/named", event_types=["job.failed"]
        )
        assert client.webhooks.test(made.id, event_type="job.failed").status_code == 200
        sent = {k.lower(): v for k, v in receiver.got.pop()["headers"].items()}
        assert sent["host"] == f"localhost:{port}"

        # ... and later takes it back: nothing is sent to it, and the test says why
        monkeypatch.setenv("AIMASS_WEBHOOK_ALLOW", "10.0.0.0/8")
        with pytest.raises(openai.BadRequestError) as err:
            client.webhooks.test(made.id, event_type="job.failed")
        assert err.value.param == "url" and "loopback" in err.value.message
        with pytest.raises(openai.BadRequestError):
            client.webhooks.update(made.id, url=f"http://127.0.0.1:{port}/other")
    jobs.run_foreground(jobs.submit("import", {"path": str(paths.home() / "uploads" / "none.csv")})["id"])
    deliverer = webhooks.Deliverer()
    assert deliverer.collect() == 1 and deliverer.send_due() == 1
    (row,) = webhooks.deliveries(made.id)
    assert row["status"] == "pending" and row["last_status"] is None
    assert row["last_error"].startswith("not sent: The URL's host 'localhost' is 127.0.0.1, a loopback")
    assert receiver.got == []

    # an allowed network: an address inside it is sent to
    monkeypatch.setenv("AIMASS_WEBHOOK_ALLOW", "127.0.0.0/8")
    assert webhooks.test(made.id, "job.failed")["status_code"] == 200


def two_keys_of(user: str, policy: str, action: str) -> list[dict]:
    """A new user allowed ``action`` on everything, and the headers of two keys bound to them."""
    directory.create_user(user)
    directory.put_policy(policy, {"Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})
    directory.attach(policy, "user", user)
    keys = []
    for _ in range(2):
        record, key = auth.create_key(user, ["manage"])
        directory.bind_key(record.id, user=user)
        keys.append({"Authorization": f"Bearer {key}"})
    return keys


def test_an_endpoint_is_managed_only_by_its_creator_and_the_operator(receiver):
    """An endpoint hears the jobs its creator's key may read: whoever could change its URL would
    hear them. dan may manage webhooks (``webhook:*``) but the admin's endpoint is not his: 404 for
    each of its routes, and the list shows only his own; another key of the same user manages it."""
    from fastapi.testclient import TestClient

    keys = two_keys_of("dan", "hooks", "*")
    theirs = webhooks.create("ops", receiver.url, ["job.failed"], auth.ADMIN_ID)
    with TestClient(create_app([])) as client:
        path = f"/v1/webhook_endpoints/{theirs['id']}"
        for method, where, body in (
            ("GET", path, None),
            ("POST", path, {"url": "https://evil.example.net/x"}),
            ("POST", path + "/rotate_secret", {}),
            ("POST", path + "/test", {"event_type": "job.succeeded"}),
            ("GET", path + "/deliveries", None),
            ("DELETE", path, None),
        ):
            answer = client.request(method, where, headers=keys[0], json=body)
            assert answer.status_code == 404, (method, where, answer.text)
        assert webhooks.get(theirs["id"]).url == receiver.url
        made = client.post(
            "/v1/webhook_endpoints",
            headers=keys[0],
            json={"url": receiver.url, "event_types": ["job.failed"]},
        )
        assert made.status_code == 200, made.text
        listed = client.get("/v1/webhook_endpoints", headers=keys[1]).json()["data"]
        assert [e["id"] for e in listed] == [made.json()["id"]]  # his, seen from his other key
        assert client.delete(f"/v1/webhook_endpoints/{made.json()['id']}", headers=keys[1]).status_code == 200


def test_one_user_cannot_take_every_webhook_endpoint(receiver, monkeypatch):
    """The server held 100 endpoints in all: one key made 100 and then nobody, the operator neither,
    could add one (nor see, to delete, the ones in the way). Now a user holds at most MAX_OWN,
    counted over every key of theirs; others and the operator still add theirs."""
    from fastapi.testclient import TestClient

    monkeypatch.setattr(webhooks, "MAX_OWN", 2)
    keys = two_keys_of("eve", "eve-hooks", "webhook:*")
    _, other = auth.create_key("frank", ["manage"])
    body = {"url": receiver.url, "event_types": ["job.failed"]}
    with TestClient(create_app([])) as client:
        made = [client.post("/v1/webhook_endpoints", headers=keys[i % 2], json=body) for i in range(3)]
        assert [m.status_code for m in made] == [200, 200, 400], made[-1].text
        assert "You have 2 webhook endpoints" in made[-1].json()["error"]["message"]
        assert (
            client.post(
                "/v1/webhook_endpoints", headers={"Authorization": f"Bearer {other}"}, json=body
            ).status_code
            == 200
        )
        admin = {"Authorization": f"Bearer {auth.admin_token()}"}
        assert client.post("/v1/webhook_endpoints", headers=admin, json=body).status_code == 200
