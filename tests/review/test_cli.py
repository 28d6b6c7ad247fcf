"""``sitewatch review RUN`` as users start it: a real server process, token printed when needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SITEWATCH_REVIEW_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sitewatch", "review", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "reviewing " in line:
            url = re.search(r"(http://\S+)", line)
            assert url, line
            # wait until the server accepts connections
            for _ in range(200):
                try:
                    httpx.get(url.group(1).split("/queue")[0] + "/favicon.ico", timeout=1)
                    return proc, "".join(lines) + url.group(1)
                except httpx.TransportError:
                    time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not start: " + "".join(lines))


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_beyond_loopback_a_token_is_generated_printed_and_required(run_dir: Path) -> None:
    proc, out = _start([str(run_dir), "--host", "127.0.0.2", "--port", "0"])
    try:
        assert "access token (generated" in out
        url = out.rsplit("\n", 1)[-1]
        token = re.search(r"token=([\w-]+)", url).group(1)
        base = url.split("/queue")[0]
        assert httpx.get(base + "/queue").status_code == 401
        with httpx.Client(follow_redirects=True) as c:
            assert c.get(url + "&reviewer=ann").status_code == 200
        assert httpx.get(base + "/api/progress", headers={"authorization": f"Bearer {token}"}).json()["total"] == 12
    finally:
        _stop(proc)


def test_loopback_default_needs_no_token_and_given_token_is_used(run_dir: Path) -> None:
    proc, out = _start([str(run_dir), "--port", "0"])
    try:
        url = out.rsplit("\n", 1)[-1]
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        assert httpx.get(url.replace("/queue", "/api/progress")).status_code == 200
    finally:
        _stop(proc)
    proc, out = _start([str(run_dir), "--host", "127.0.0.2", "--port", "0", "--token", "s3cret-token-0123456789-abcdefXYZ"])
    try:
        assert "generated" not in out and out.endswith("/queue?token=s3cret-token-0123456789-abcdefXYZ")
    finally:
        _stop(proc)


def test_bad_config_is_a_usage_error(run_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "review.yaml"
    cfg.write_text("review:\n  prot: 1\n")
    r = subprocess.run([sys.executable, "-m", "sitewatch", "review", str(run_dir), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "prot" in r.stderr and "port" in r.stderr


def test_verdicts_from_an_earlier_run_are_carried_over(run_dir: Path, tmp_path: Path) -> None:
    from review.store import VerdictStore
    from tests.review.make_run import write_run

    VerdictStore.for_run(run_dir).add_verdict("s00000", "ann", "destroyed")
    VerdictStore.for_run(run_dir).add_verdict("s00001", "ann", "no-damage")
    rerun = write_run(tmp_path / "rerun", 12, seed=5)
    proc, out = _start([str(rerun), "--port", "0", "--verdicts-from", str(run_dir)])
    try:
        assert "imported 2 verdict(s)" in out
        url = out.rsplit("\n", 1)[-1]
        assert httpx.get(url.replace("/queue", "/api/progress")).json()["reviewed"] == 2
    finally:
        _stop(proc)
    r = subprocess.run([sys.executable, "-m", "sitewatch", "review", str(rerun), "--verdicts-from", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no review.sqlite there" in r.stderr
