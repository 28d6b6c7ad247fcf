"""The review app against an adversary (issue 10, item 11): huge bodies, weak or guessed tokens,
cookies behind TLS, and files that are not the run's listed outputs. Real uvicorn servers."""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from review.app import create_app
from review.config import ReviewConfig
from review.security import TokenFailures, check_token
from review.server import access_policy, uvicorn_config
from sitewatch.errors import UsageError
from tests.review.conftest import free_port
from tests.review.listed_outputs import record_outputs


@pytest.fixture()
def run_dir(run_dir: Path) -> Path:
    """The shared run folder, with its outputs listed in manifest.json (only those are served)."""
    return record_outputs(run_dir)


class Served:
    """The app served by uvicorn exactly as ``sitewatch review`` configures it, in a thread."""

    def __init__(self, run: Path, config: ReviewConfig, token: str | None = None) -> None:
        import uvicorn

        self.config = config
        policy = access_policy(config.host, token)
        self.token = policy.token
        self.port = free_port(config.host)
        self.app = create_app(run, config, token=policy.token, allowed_hosts=policy.allowed_hosts)
        self.server = uvicorn.Server(uvicorn_config(self.app, config, self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture()
def served(run_dir: Path) -> Iterator[Served]:
    with Served(run_dir, ReviewConfig(rerank_every=0)) as server:
        yield server


# -- request bodies --------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _stream_post(host: str, port: int, total: int, *, chunked: bool) -> tuple[bytes, int]:
    """POST ``total`` bytes to a verdict URL, 1 MiB at a time, until the server answers.

    Returns ``(status line, bytes sent before the answer came)``.
    """
    sock = socket.create_connection((host, port), timeout=10)
    head = (f"POST /site/0/verdict HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n")
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    sock.sendall(head.encode())
    block = b"note=" + b"x" * ((1 << 20) - 5)
    piece = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
    sent, answer = 0, b""
    sock.setblocking(False)
    deadline = time.monotonic() + 120
    try:
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                data = sock.recv(65536)
                answer += data
                if not data or b"\r\n\r\n" in answer:
                    break
            if writable:
                try:
                    sent += sock.send(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
        sock.setblocking(True)
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return answer.split(b"\r\n", 1)[0], sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_300_mb_post_is_refused_early_and_memory_stays_flat(served: Served, chunked: bool) -> None:
    served.app.state.review.map.wait(60)  # the run map's picture is made in the background at start-up
    _stream_post(served.config.host, served.port, 1_000_000, chunked=chunked)  # warm up the code paths
    rss = [_rss_mb()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss.append(_rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        status, sent = _stream_post(served.config.host, served.port, 300_000_000, chunked=chunked)
    finally:
        stop.set()
        sampler.join()
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < 40_000_000, f"{sent / 1e6:.0f} MB were sent before the server refused"
    assert max(rss) - rss[0] < 16, f"the server grew by {max(rss) - rss[0]:.0f} MB"
    # and the server still serves
    assert httpx.get(served.url + "/reviewer").status_code == 200


def test_a_body_just_over_the_limit_is_413_and_nothing_is_stored(served: Served, run_dir: Path) -> None:
    from review.store import VerdictStore

    with httpx.Client(base_url=served.url) as c:
        c.get("/queue?reviewer=ann")
        r = c.post("/site/0/verdict", data={"verdict": "destroyed", "csrf": c.cookies.get("sw_csrf"), "note": "x" * 64_000})
        assert r.status_code == 413 and "too large" in r.text
    assert VerdictStore.for_run(run_dir).verdicts() == []


# -- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token, why",
    [
        ("a", "1 character"),
        ("s3cret-token", "12 character"),
        ("0123456789abcdef0123456789abcde", "31 character"),  # hex: 124 bits
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "only 1 different"),
        ("correct horse battery staple 2024 !!", "other than A-Z"),
        ("Zm9vYmFyYmF6cXV4cXV1eA==", "other than A-Z"),  # standard base64 padding
    ],
)
def test_weak_tokens_are_refused_with_the_rule(run_dir: Path, token: str, why: str) -> None:
    with pytest.raises(UsageError, match="at least 128 random bits") as info:
        access_policy("0.0.0.0", token)
    assert why in str(info.value) and info.value.setting == "review.token"
    with pytest.raises(UsageError, match="too weak"):
        create_app(run_dir, token=token)
    with pytest.raises(UsageError, match="too weak"):
        access_policy("127.0.0.1", token)  # a weak token is weak on loopback too


def test_strong_tokens_are_accepted() -> None:
    for token in (secrets.token_urlsafe(16), secrets.token_hex(16), secrets.token_urlsafe(32)):
        check_token(token)
        assert access_policy("0.0.0.0", token).token == token
    assert len(access_policy("0.0.0.0", None).token or "") >= 43  # generated: 256 bits


@pytest.mark.slow
def test_cli_refuses_a_weak_token_naming_the_flag(run_dir: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SITEWATCH_REVIEW_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "sitewatch", "review", str(run_dir), "--host", "127.0.0.2", "--token", "a"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--token (review.token): the access token is too weak" in r.stderr, r.stderr
    assert "22 or more characters" in r.stderr
    r = subprocess.run([sys.executable, "-m", "sitewatch", "review", str(run_dir), "--host", "127.0.0.2"],
                       capture_output=True, text=True, env={**env, "SITEWATCH_REVIEW_TOKEN": "hunter2"}, timeout=120)
    assert r.returncode == 2 and "$SITEWATCH_REVIEW_TOKEN (review.token)" in r.stderr, r.stderr


def test_a_port_in_use_is_refused_naming_the_flag_before_anything_is_served(run_dir: Path) -> None:
    """uvicorn printed the app's URL, then its bind error, and exited with status 3."""
    import socket

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "sitewatch", "review", str(run_dir), "--port", str(port)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert f"--port (review.port): {port} on 127.0.0.1 is not free" in r.stderr and "0 for a free one" in r.stderr
    assert "reviewing" not in r.stdout  # no URL announced for an app that cannot be reached


def test_token_failures_count_different_tokens_per_client_within_a_window() -> None:
    now = [0.0]
    failures = TokenFailures(3, 60.0, clock=lambda: now[0])
    for _ in range(20):
        failures.failed("10.0.0.1", "stale-cookie")  # one stale token sent again and again
    assert failures.retry_after("10.0.0.1") == 0.0
    failures.failed("10.0.0.1", "guess-1")
    now[0] = 10.0
    failures.failed("10.0.0.1", "guess-2")
    assert failures.retry_after("10.0.0.1") == pytest.approx(50.0)  # until the first failure is 60 s old
    assert failures.retry_after("10.0.0.2") == 0.0  # another client is not affected
    now[0] = 60.0
    assert failures.retry_after("10.0.0.1") == 0.0
    assert TokenFailures(0, 60.0).retry_after("x") == 0.0  # 0: no limit


def test_guessing_the_token_gets_429_for_that_client_only(run_dir: Path) -> None:
    config = ReviewConfig(host="127.0.0.1", rerank_every=0, token_failures=3)
    token = secrets.token_urlsafe(32)
    with Served(run_dir, config, token=token) as server, httpx.Client(base_url=server.url) as c:
        attacker = {"x-forwarded-for": "203.0.113.7"}  # through the (trusted, loopback) proxy
        for _ in range(5):
            assert c.get("/queue", headers={**attacker, "authorization": "Bearer stale-but-same"}).status_code == 401
        for guess in ("guess-1", "guess-2"):
            assert c.get(f"/queue?token={guess}", headers=attacker).status_code == 401
        r = c.get(f"/queue?token={token}", headers=attacker)  # even the right token, while refused
        assert r.status_code == 429 and "too many wrong access tokens" in r.text
        assert 0 < int(r.headers["retry-after"]) <= 60
        colleague = {"x-forwarded-for": "198.51.100.9", "authorization": f"Bearer {token}"}
        assert c.get("/api/progress", headers=colleague).status_code == 200


# -- cookies behind TLS ----------------------------------------------------------------------


def _cookie_flags(response: httpx.Response, name: str) -> str:
    found = [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{name}=")]
    assert found, response.headers
    return found[0].lower()


def test_cookies_are_secure_behind_a_tls_proxy(run_dir: Path) -> None:
    https = {"x-forwarded-proto": "https"}
    with Served(run_dir, ReviewConfig(rerank_every=0)) as server:
        assert "secure" in _cookie_flags(httpx.get(server.url + "/reviewer", headers=https), "sw_csrf")
        assert "secure" not in _cookie_flags(httpx.get(server.url + "/reviewer"), "sw_csrf")
        r = httpx.get(server.url + "/queue?reviewer=ann", headers=https)
        assert "secure" in _cookie_flags(r, "sw_reviewer")
    with Served(run_dir, ReviewConfig(rerank_every=0, trusted_proxies=())) as server:  # header not believed
        assert "secure" not in _cookie_flags(httpx.get(server.url + "/reviewer", headers=https), "sw_csrf")
    config = ReviewConfig(host="127.0.0.2", rerank_every=0, behind_tls=True)
    with Served(run_dir, config) as server:
        r = httpx.get(f"{server.url}/queue?token={server.token}")
        assert r.status_code == 303
        assert "secure" in _cookie_flags(r, "sw_token") and "httponly" in _cookie_flags(r, "sw_token")
        r = httpx.get(f"{server.url}/reviewer", headers={"authorization": f"Bearer {server.token}"})
        assert "secure" in _cookie_flags(r, "sw_csrf")


# -- served files ----------------------------------------------------------------------------


def test_only_the_runs_listed_outputs_are_served(served: Served, run_dir: Path) -> None:
    with httpx.Client(base_url=served.url) as c:
        c.get("/queue?reviewer=ann")  # creates review.sqlite
        good = c.get("/chip/chips/s00000_before.png")
        assert good.status_code == 200 and good.content.startswith(b"\x89PNG")
        assert (run_dir / "review.sqlite").is_file()
        (run_dir / "chips" / "evil.png").symlink_to(run_dir / "review.sqlite")
        (run_dir / "config.png").symlink_to(run_dir / "config.yaml")
        for path in ("/chip/chips/evil.png", "/chip/config.png"):
            r = c.get(path)
            assert r.status_code == 404 and b"SQLite" not in r.content and b"chip_px" not in r.content
            assert "only the outputs manifest.json lists are served" in r.text
        # a listed chip swapped for a link to the store, or changed in place, is not served either
        before = run_dir / "chips" / "s00001_before.png"
        before.unlink()
        before.symlink_to(run_dir / "review.sqlite")
        r = c.get("/chip/chips/s00001_before.png")
        assert r.status_code == 404 and b"SQLite" not in r.content and "changed after detect wrote it" in r.text
        after = run_dir / "chips" / "s00002_after.png"
        after.write_bytes(after.read_bytes() + b"tampered")
        assert c.get("/chip/chips/s00002_after.png").status_code == 404
        page = c.get("/site/2").text
        assert "has changed since detect wrote it" in page and "/chip/chips/s00002_after.png" not in page
        assert "/chip/chips/s00000_before.png" in c.get("/site/0").text


def test_a_manifest_without_outputs_serves_no_file(run_dir: Path) -> None:
    from fastapi.testclient import TestClient

    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["outputs"] = {}  # lists none (a manifest without the section is refused as unreadable)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    client = TestClient(create_app(run_dir, ReviewConfig(rerank_every=0)))
    client.get("/queue?reviewer=ann")
    assert client.get("/chip/chips/s00000_before.png").status_code == 404
    assert "/rendered-chip/0/before.png" in client.get("/site/0").text  # cut on demand instead
