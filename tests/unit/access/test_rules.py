"""Every REST route is in the access guard's one table, so a new route cannot skip the policies."""

from __future__ import annotations

from aimass.serve.access_guard import RULES, AccessGuard
from aimass.serve.app import create_app

UNRULED = {("GET", "/v1/health")}  # none today; health, readiness and metrics live outside /v1


def test_every_v1_route_has_a_rule(home):
    guard = AccessGuard()
    app = create_app(refs=[])
    routes = [
        (method, route.path)
        for route in app.routes
        if getattr(route, "path", "").startswith("/v1/")
        for method in sorted(getattr(route, "methods", None) or ())
        if method != "HEAD" and (method, route.path) not in UNRULED
    ]
    assert len(routes) > 40  # the walk found the app's routes
    missing = [f"{m} {p}" for m, p in routes if guard.rule({"method": m, "path": p}) is None]
    assert not missing, f"add these routes to RULES in aimass/serve/access_guard.py: {missing}"


def test_the_new_routes_name_their_actions(home):
    guard = AccessGuard()
    want = {
        ("POST", "/v1/embeddings"): "model:Predict",
        ("POST", "/v1/uploads"): "dataset:Import",
        ("POST", "/v1/datasets"): "dataset:Import",
        ("GET", "/v1/datasets"): "dataset:List",
        ("GET", "/v1/datasets/abc123"): "dataset:Read",
        ("GET", "/v1/datasets/abc123/rejects"): "dataset:Read",
        ("GET", "/v1/versions"): "model:List",
        ("GET", "/v1/versions/reviews:3"): "model:Read",
        ("GET", "/v1/versions/reviews:3/files/confusion.png"): "model:Read",
        ("PUT", "/v1/versions/reviews:3/aliases/production"): "model:Deploy",
        ("GET", "/v1/versions/compare"): "model:List",  # not model:Read on a model named "compare"
        ("DELETE", "/v1/versions/reviews:3"): "model:Delete",
        ("DELETE", "/v1/datasets/abc123"): "dataset:Delete",
        ("DELETE", "/v1/files/abc123"): "dataset:Delete",
        ("GET", "/v1/versions/reviews:3/export"): "model:Export",  # not model:Read: a predict key has that
        ("GET", "/v1/services/reviews/metrics"): "service:Read",
        ("GET", "/v1/usage/series"): "usage:Read",
        ("POST", "/v1/jobs/abc123/pause"): "job:Pause",
        ("POST", "/v1/jobs/abc123/resume"): "job:Resume",
        ("POST", "/v1/fine_tuning/jobs/abc123/pause"): "job:Pause",
        ("POST", "/v1/fine_tuning/jobs/abc123/resume"): "job:Resume",
        ("POST", "/v1/batches"): "job:Submit",
        ("GET", "/v1/batches/abc123"): "job:Read",
        ("POST", "/v1/batches/abc123/cancel"): "job:Cancel",
        ("PATCH", "/v1/keys/abc123"): "key:Update",
        ("POST", "/v1/vector_stores"): "vector_store:Create",
        ("GET", "/v1/vector_stores"): "vector_store:List",
        ("GET", "/v1/vector_stores/vs_1"): "vector_store:Read",
        ("POST", "/v1/vector_stores/vs_1"): "vector_store:Update",
        ("DELETE", "/v1/vector_stores/vs_1"): "vector_store:Delete",
        ("POST", "/v1/vector_stores/vs_1/files"): "vector_store:Update",
        ("GET", "/v1/vector_stores/vs_1/files/file-1/content"): "vector_store:Read",
        ("POST", "/v1/vector_stores/vs_1/file_batches/vsfb_1/cancel"): "vector_store:Update",
        ("POST", "/v1/vector_stores/vs_1/search"): "vector_store:Search",
    }
    for (method, path), action in want.items():
        rule, _ = guard.rule({"method": method, "path": path})
        assert rule.action == action, (method, path)
    embeddings, _ = guard.rule({"method": "POST", "path": "/v1/embeddings"})
    assert embeddings.management is False and embeddings.target({}, {"model": "e5"}) == ("model", "e5")
    assert len({(r.method, r.template) for r in RULES}) == len(RULES)  # no route listed twice
    adding, params = guard.rule({"method": "POST", "path": "/v1/vector_stores/vs_1/files"})
    assert [(a, t(params, {"file_id": "file-1"})) for a, t in adding.also] == [
        ("dataset:Read", ("dataset", "file-1"))
    ]
    creating, _ = guard.rule({"method": "POST", "path": "/v1/vector_stores"})
    assert creating.target({}, {"project": "nlp"}) == ("", "aimass:project/nlp/vector_store/*")


def test_an_openai_file_is_its_dataset_or_for_a_result_file_its_job(home):
    """An uploaded file is read as its dataset; a fine-tuning job's result file as the job, so a
    key that may not read the job cannot read its metrics either."""
    guard = AccessGuard()
    for path in ("/v1/files/abc123", "/v1/files/abc123/content"):
        rule, params = guard.rule({"method": "GET", "path": path})
        assert (rule.action(params, {}), rule.target(params, {})) == ("dataset:Read", ("dataset", "abc123"))
    for path in ("/v1/files/results-0f0f0f0f0f0f", "/v1/files/results-0f0f0f0f0f0f/content"):
        rule, params = guard.rule({"method": "GET", "path": path})
        assert (rule.action(params, {}), rule.target(params, {})) == ("job:Read", ("job", "0f0f0f0f0f0f"))
    for name in ("batch_output-0f0f0f0f0f0f", "batch_errors-0f0f0f0f0f0f"):  # a batch's answers: the job's
        rule, params = guard.rule({"method": "GET", "path": f"/v1/files/{name}/content"})
        assert (rule.action(params, {}), rule.target(params, {})) == ("job:Read", ("job", "0f0f0f0f0f0f"))
    batch_input = "file-" + "ab" * 12  # a batch's requests: data
    rule, params = guard.rule({"method": "GET", "path": f"/v1/files/{batch_input}"})
    assert (rule.action(params, {}), rule.target(params, {})) == ("dataset:Read", ("dataset", batch_input))
    rule, _ = guard.rule({"method": "GET", "path": "/v1/fine_tuning/jobs/0f0f0f0f0f0f/checkpoints"})
    assert rule.action == "job:Read"
