"""Fixtures of the review tests: a run folder and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from review.config import ReviewConfig
from tests.review.make_run import write_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A fresh 12-site run folder (top 6 with chips, last one cannot_assess)."""
    return write_run(tmp_path / "run", 12, names={1: "<script>alert(1)</script><b>Clinic</b>"})


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The review app served by a real uvicorn server in a background thread."""

    def __init__(self, run: Path, *, host: str = "127.0.0.1", token: str | None = None, config: ReviewConfig | None = None) -> None:
        import uvicorn

        from review.app import create_app
        from review.server import access_policy

        self.host = host
        self.port = free_port(host)
        policy = access_policy(host, token)
        self.token = policy.token
        self.app = create_app(run, config or ReviewConfig(rerank_every=0), token=policy.token, allowed_hosts=policy.allowed_hosts)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=self.port, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("review server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture()
def live_server(run_dir: Path) -> Iterator[LiveServer]:
    with LiveServer(run_dir) as server:
        yield server


def chromium_or_skip() -> Path:
    """Debian's Chromium, or skip (fail under CI=true, where .ci/system-deps installs it)."""
    if CHROMIUM.exists() and shutil.which(str(CHROMIUM)):
        return CHROMIUM
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/system-deps should have installed Debian's chromium")
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run browser tests")
