"""The `weft_dev` pytest fixture: the app's tasks on a `weft dev` of the
test session's own.

    def test_sum(weft_dev):
        from render import Render
        assert Render().workflows.run_task("sum_squares", [[1, 2, 3]]).results == [14]

The fixture starts `weft dev` once per test session for the app in the
rootdir, on a free loopback port with a fresh database in a temporary
folder, and sets `RENDER_USE_LOCAL_DEV=true` and `RENDER_LOCAL_DEV_URL` so
that Render's official client (and weft's) talk to it. At the end of the
session it stops the server. A test that fails while using it gets the
server's output (the tasks' logs among it) in its report.

Settings, in pytest.ini, pyproject.toml's [tool.pytest.ini_options] or
setup.cfg:

    weft_app = python main.py          # the app's start command (the default)
    weft_dev_args = --max-concurrent 4 # more arguments for `weft dev`

A leading `python` or `python3` in `weft_app` is the interpreter that runs
pytest, so the app sees the same packages as the tests.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List

import pytest

from weft_workflows import find_weft_bin

#: How long the server may take to start the app and register its tasks.
START_TIMEOUT_S = 60.0
_BANNER = "serving the Render Workflows API on "
_SEEN_KEY = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "weft_app",
        "the start command of the app the weft_dev fixture serves "
        "(default: python main.py, run in the rootdir)",
        default="python main.py",
    )
    parser.addini(
        "weft_dev_args",
        "more arguments for `weft dev` in the weft_dev fixture",
        type="args",
        default=[],
    )


@dataclass
class WeftDev:
    """A running `weft dev`: where it listens and what it printed."""

    url: str
    port: int
    database: Path
    log: Path
    command: List[str] = field(default_factory=list)

    def output(self) -> str:
        """Everything the server (and the app's task processes) printed."""
        return self.log.read_text(errors="replace")


def _start_command(config: pytest.Config) -> List[str]:
    app = shlex.split(config.getini("weft_app"))
    if not app:
        raise pytest.UsageError("weft_app is empty: give the app's start command")
    if app[0] in ("python", "python3"):
        app[0] = sys.executable
    return app


@pytest.fixture(scope="session")
def weft_dev(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WeftDev]:
    """A `weft dev` serving the app's tasks for the whole session."""
    config = request.config
    folder = tmp_path_factory.mktemp("weft-dev")
    database = folder / "weft.db"
    log = folder / "weft-dev.log"
    command = [
        find_weft_bin(),
        "dev",
        "--port",
        "0",
        "--db",
        str(database),
        *config.getini("weft_dev_args"),
        "--",
        *_start_command(config),
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            cwd=str(config.rootpath),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_for_banner(process, log)
        server = WeftDev(
            url=url,
            port=int(url.rsplit(":", 1)[1]),
            database=database,
            log=log,
            command=command,
        )
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RENDER_USE_LOCAL_DEV", "true")
            env.setenv("RENDER_LOCAL_DEV_URL", url)
            yield server
    finally:
        _stop(process)


def _wait_for_banner(process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        text = log.read_text(errors="replace")
        # Whole lines only: the banner may be half written.
        for line in text[: text.rfind("\n") + 1].splitlines():
            if _BANNER in line:
                return line.split(_BANNER, 1)[1].split()[0]
        if process.poll() is not None:
            raise RuntimeError(
                f"weft dev exited ({process.returncode}) before serving; its output:\n{text}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"weft dev did not serve within {START_TIMEOUT_S:.0f} s; its output:\n{text}"
            )
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("weft_dev")
    if not isinstance(server, WeftDev):
        return
    text = server.output()
    if report.when == "setup":
        # What the server printed before this test is earlier tests'.
        item.stash[_SEEN_KEY] = len(text)
    if report.failed:
        report.sections.append(("weft dev output", text[item.stash.get(_SEEN_KEY, 0) :]))
