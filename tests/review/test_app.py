"""The review app over HTTP: queues, verdicts, progress, re-rank and its security rules."""

from __future__ import annotations

import http.client
import re
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from review.app import create_app
from review.config import ReviewConfig
from review.store import VerdictStore
from tests.review.conftest import LiveServer
from tests.review.listed_outputs import record_outputs


@pytest.fixture()
def run_dir(run_dir: Path) -> Path:
    """The shared run folder, with its outputs listed in manifest.json (only those are served)."""
    return record_outputs(run_dir)


def _client(run_dir: Path, reviewer: str = "alice", **kwargs) -> TestClient:
    client = TestClient(create_app(run_dir, ReviewConfig(rerank_every=0, **kwargs)))
    assert client.get(f"/queue?reviewer={reviewer}").status_code == 200
    return client


def _post(client: TestClient, index: int, verdict: str, **extra: str) -> httpx.Response:
    data = {"verdict": verdict, "csrf": client.cookies.get("sw_csrf"), "view": "score", "show": "todo", **extra}
    return client.post(f"/site/{index}/verdict", data=data, headers={"accept": "application/json"})


def test_first_visit_asks_for_a_name(run_dir: Path) -> None:
    client = TestClient(create_app(run_dir))
    r = client.get("/queue")
    assert r.url.path == "/reviewer" and "Who is reviewing?" in r.text
    csrf = client.cookies.get("sw_csrf")
    r = client.post("/reviewer", data={"name": "Bea", "csrf": csrf, "next": "/progress"})
    assert r.url.path == "/progress" and "reviewer: <b id=\"reviewer-name\">Bea</b>" in r.text
    r = client.post("/reviewer", data={"name": "", "csrf": csrf, "next": "https://evil.example/"})
    assert r.status_code == 400 and "reviewer name is empty" in r.text
    # a link cannot silently re-attribute: ?reviewer= only names someone who has no name yet
    assert 'id="reviewer-name">Bea<' in client.get("/queue?reviewer=mallory").text
    r = client.post("/reviewer", data={"name": "Bea B", "csrf": csrf, "next": "//evil.example/x"}, follow_redirects=False)
    assert r.headers["location"] == "/queue"  # only local redirects


def test_queue_views_order_sites(run_dir: Path) -> None:
    client = _client(run_dir)
    score = client.get("/queue?view=score").text
    ids = re.findall(r'<a href="/site/\d+\?view=score&amp;show=todo">(s\d+)</a>', score)
    assert ids[:3] == ["s00000", "s00001", "s00002"] and ids[-1] == "s00011"  # cannot_assess last
    unc = client.get("/queue?view=uncertainty").text
    app_state = client.app.state.review
    order = app_state.queues.order("uncertainty")
    gaps = [abs(app_state.run.sites[i].score - app_state.queues.threshold) for i in order]
    assert gaps == sorted(gaps) and "nearest the threshold" in unc
    val = app_state.queues.order("validation")
    assert len(val) == 11 and sorted(val) == list(range(11))  # all assessable sites, shuffled
    again = create_app(run_dir, ReviewConfig(rerank_every=0)).state.review.queues.order("validation")
    assert again == val  # seeded: every reviewer sees the same sample


def test_verdicts_flow_to_next_site_and_progress(run_dir: Path) -> None:
    client = _client(run_dir)
    r = _post(client, 0, "destroyed", note="roof gone")
    assert r.json()["ok"] and r.json()["next"] == "/site/1?view=score&show=todo"
    _post(client, 1, "no-damage")
    # the todo queue no longer shows what alice judged
    assert "s00000</a>" not in client.get("/queue?view=score&show=todo").text
    assert "s00000</a>" in client.get("/queue?view=score&show=all").text
    bob = _client(run_dir, "bob")
    assert "s00000</a>" in bob.get("/queue?view=score&show=todo").text  # bob has not judged it
    assert "s00000</a>" not in bob.get("/queue?view=score&show=unreviewed").text  # but alice has
    p = client.get("/api/progress").json()
    assert (p["reviewed"], p["remaining"], p["confirmed_destroyed"]) == (2, 10, 1)
    page = client.get("/progress").text
    assert 'id="destroyed">1<' in page and "precision of the flagged list" in page
    # a plain form post (no script) redirects to the next site
    r = client.post("/site/2/verdict", data={"verdict": "minor-damage", "csrf": client.cookies.get("sw_csrf")}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/site/3")
    rows = VerdictStore.for_run(run_dir).verdicts()
    assert [(r.site_id, r.reviewer, r.verdict) for r in rows] == [
        ("s00000", "alice", "destroyed"), ("s00001", "alice", "no-damage"), ("s00002", "alice", "minor-damage")
    ]
    assert rows[0].note == "roof gone"


def test_disagreement_goes_to_adjudication(run_dir: Path) -> None:
    alice, bob = _client(run_dir, "alice"), _client(run_dir, "bob")
    _post(alice, 0, "destroyed", note="alice-note")
    # independent review: bob does not see alice's verdict before giving his own
    page = bob.get("/site/0").text
    assert "alice-note" not in page and 'id="hidden-verdicts">1 verdict(s)' in page
    assert "destroyed <small>agreed" not in bob.get("/queue?show=all").text
    _post(bob, 0, "no-damage")
    queue = alice.get("/queue?view=disputed").text
    assert "s00000</a>" in queue
    site = alice.get("/site/0?view=disputed").text
    assert "Reviewers disagree" in site and 'id="adjudicate" checked' in site
    assert alice.get("/api/progress").json()["disputed"] == 1
    r = _post(alice, 0, "destroyed", adjudicate="1", view="disputed")
    assert r.json()["ok"]
    assert "s00000</a>" not in alice.get("/queue?view=disputed").text
    p = alice.get("/api/progress").json()
    assert (p["disputed"], p["adjudicated"], p["agreement"]["exact"]) == (0, 1, 0.0)


def test_quick_rerank_uses_embeddings_only(run_dir: Path) -> None:
    client = _client(run_dir, rerank_min_labels=4)
    for i, v in enumerate(["destroyed", "destroyed", "no-damage", "no-damage", "destroyed"]):
        _post(client, i, v)
    r = client.post("/rerank", data={"csrf": client.cookies.get("sw_csrf")}, headers={"accept": "application/json"})
    assert r.json() == {"ok": True, "labelled": 5}
    text = client.get("/queue?view=rerank&show=all").text
    assert "re-rank</th>" in text
    rr = client.app.state.review.queues.current_rerank
    assert set(rr.prob) == {f"s{i:05d}" for i in range(11)}
    assert all(0.0 <= p <= 1.0 for p in rr.prob.values())
    assert any(e["action"] == "rerank" for e in VerdictStore.for_run(run_dir).audit())


def test_html_in_site_names_and_notes_is_shown_as_text(run_dir: Path) -> None:
    client = _client(run_dir, "<i>eve</i>")
    _post(client, 1, "destroyed", note='<img src=x onerror="alert(1)">')
    for page in (client.get("/site/1").text, client.get("/queue?show=all").text):
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;Clinic&lt;/b&gt;" in page
        assert "<i>eve</i>" not in page and "&lt;i&gt;eve&lt;/i&gt;" in page
    site = client.get("/site/1").text
    assert '<img src=x onerror' not in site and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in site
    assert "script-src 'self'" in client.get("/site/1").headers["content-security-policy"]


def test_cross_site_posts_are_refused(run_dir: Path) -> None:
    client = _client(run_dir)
    csrf = client.cookies.get("sw_csrf")
    ok = {"verdict": "destroyed", "csrf": csrf}
    r = client.post("/site/0/verdict", data={"verdict": "destroyed"})
    assert r.status_code == 403 and "CSRF" in r.text  # no token in the form
    r = client.post("/site/0/verdict", data={"verdict": "destroyed", "csrf": "forged"})
    assert r.status_code == 403
    r = client.post("/site/0/verdict", data=ok, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.text
    r = client.post("/site/0/verdict", data=ok, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    r = client.post("/rerank", data={"csrf": "forged"})
    assert r.status_code == 403
    r = client.post("/site/0/verdict", data={**ok, "note": "x" * 70_000})
    assert r.status_code == 413 and "too large" in r.text
    assert VerdictStore.for_run(run_dir).verdicts() == []
    r = client.post("/site/0/verdict", data=ok, headers={"origin": "http://testserver", "sec-fetch-site": "same-origin"}, follow_redirects=False)
    assert r.status_code == 303 and len(VerdictStore.for_run(run_dir).verdicts()) == 1


def _raw_get(server: LiveServer, path: str) -> tuple[int, bytes]:
    """GET without any client-side path normalisation (``..`` is sent as is)."""
    con = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        con.putrequest("GET", path, skip_host=True)
        con.putheader("Host", f"{server.host}:{server.port}")
        con.endheaders()
        resp = con.getresponse()
        return resp.status, resp.read()
    finally:
        con.close()


def test_chip_paths_cannot_leave_the_run_folder(live_server: LiveServer, run_dir: Path) -> None:
    (run_dir.parent / "secret.png").write_bytes(b"\x89PNG secret")
    status, body = _raw_get(live_server, "/chip/chips/s00000_before.png")
    assert status == 200 and body.startswith(b"\x89PNG")
    for path in (
        "/chip/../secret.png",
        "/chip/chips/../../secret.png",
        "/chip/%2e%2e/secret.png",
        "/chip/chips/%2e%2e/%2e%2e/secret.png",
        "/chip/..%2fsecret.png",
        "/chip/%2fetc%2fpasswd.png",
        "/chip/manifest.json",
    ):
        status, body = _raw_get(live_server, path)
        assert status in (400, 404), path
        assert b"secret" not in body
    (run_dir / "chips" / "link.png").symlink_to(run_dir.parent / "secret.png")
    status, body = _raw_get(live_server, "/chip/chips/link.png")
    assert status == 404 and b"secret" not in body


def test_token_required_beyond_loopback(run_dir: Path) -> None:
    with LiveServer(run_dir, host="127.0.0.2") as server:
        assert server.token  # generated, because 127.0.0.2 is not 127.0.0.1
        with httpx.Client(base_url=server.url) as anon:
            assert anon.get("/queue").status_code == 401
            assert anon.get("/chip/chips/s00000_before.png").status_code == 401
            assert anon.get("/static/review.js").status_code == 401
            assert anon.get("/queue?token=wrong").status_code == 401
            assert anon.post("/site/0/verdict", data={"verdict": "destroyed"}).status_code == 401
        with httpx.Client(base_url=server.url, follow_redirects=True) as user:
            r = user.get(f"/queue?reviewer=ann&token={server.token}")
            assert r.status_code == 200 and "token=" not in str(r.url)  # token moved into a cookie
            assert user.get("/chip/chips/s00000_before.png").status_code == 200
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.token}"}) as api:
            assert api.get("/api/progress").status_code == 200


def test_loopback_refuses_foreign_host_headers(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as c:
        assert c.get("/reviewer").status_code == 200
        assert c.get("/reviewer", headers={"host": "attacker.example"}).status_code == 400


def test_simultaneous_submissions_from_many_clients(live_server: LiveServer, run_dir: Path) -> None:
    n_clients, per_client = 12, 8
    barrier = threading.Barrier(n_clients)
    errors: list[str] = []

    def reviewer(k: int) -> None:
        with httpx.Client(base_url=live_server.url, follow_redirects=True, timeout=30) as c:
            c.get(f"/queue?reviewer=r{k}")
            csrf = c.cookies.get("sw_csrf")
            barrier.wait()
            for j in range(per_client):
                r = c.post(
                    f"/site/{j % 11}/verdict",
                    data={"verdict": "destroyed", "note": f"r{k}-{j}", "csrf": csrf},
                    headers={"accept": "application/json", "origin": live_server.url},
                )
                if r.status_code != 200 or not r.json().get("ok"):
                    errors.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=reviewer, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = VerdictStore.for_run(run_dir)
    rows = store.verdicts()
    assert len(rows) == n_clients * per_client
    assert {r.note for r in rows} == {f"r{k}-{j}" for k in range(n_clients) for j in range(per_client)}
    assert len(store.audit()) == n_clients * per_client
    with httpx.Client(base_url=live_server.url) as c:
        c.get("/queue?reviewer=x")
        assert c.get("/api/progress").json()["agreement"]["pairs"] > 0


def test_sites_without_chips_are_cut_on_demand_or_say_why(run_dir: Path) -> None:
    client = _client(run_dir)
    page = client.get("/site/8").text  # detect wrote chips for the top 6 only
    assert "/rendered-chip/8/before.png" in page
    r = client.get("/rendered-chip/8/before.png")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert (run_dir / "review.sqlite-chips").is_file()
    page = client.get("/site/11").text  # cannot_assess: no chip, with the reason
    assert "no chip: cannot be assessed (outside_after_coverage)" in page
    off = _client(run_dir, render_missing_chips=False)
    assert "no chip: detect wrote chips for its top sites only" in off.get("/site/9").text


def test_every_state_changing_route_needs_the_csrf_token(run_dir: Path) -> None:
    """The CSRF check is one app-wide dependency: no POST route, present or future, skips it."""
    from fastapi.routing import APIRoute

    from review.app import ROUTERS

    client = _client(run_dir)
    posts = [r.path for router in ROUTERS for r in router.routes if isinstance(r, APIRoute) and "POST" in r.methods]
    assert {"/reviewer", "/site/{index}/verdict", "/rerank"} <= set(posts)
    for path in posts:
        url = path.replace("{index}", "0")
        r = client.post(url, data={"verdict": "destroyed", "name": "mallory"})
        assert r.status_code == 403 and "CSRF" in r.text, path
        r = client.post(url, data={"csrf": client.cookies.get("sw_csrf")}, headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.text, path
    assert VerdictStore.for_run(run_dir).verdicts() == [] and VerdictStore.for_run(run_dir).audit() == []
