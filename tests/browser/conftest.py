"""Fixtures for the browser test: the system Chromium, and JupyterLab on a free port.

The browser is Debian's ``chromium`` (Playwright's own browser download is not used). Where it
or the ``playwright`` package is missing the tests skip with the reason, except in CI (``CI``
set), where that is a failure: ``.ci/run`` installs the package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from .browser_support import NOTEBOOKS, RESULTS, unavailable

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SERVER_START_TIMEOUT = 90  # seconds for JupyterLab to answer
# JupyterLab user settings for the test: every cell kept in the page (no windowing, so all
# outputs can be read), the notebook's own kernel started without asking,
# and no news or update checks that would reach the network.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    unavailable("no system Chromium: install the Debian package (apt-get install chromium)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is missing: pip install -e '.[browser]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """JupyterLab serving a copy of notebooks/ (so autosave never touches the repo's files),
    token-less on a free loopback port; stopped, with its kernels, at the end."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = home / "settings"
    for name, value in LAB_SETTINGS.items():
        file = settings / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(value))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    port = _free_port()
    log = (home / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
         "--ServerApp.allow_root=True", "--LabApp.news_url=", "--ServerApp.open_browser=False"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited:\n{(home / 'lab.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer in {SERVER_START_TIMEOUT} s:\n"
                                       f"{(home / 'lab.log').read_text()}") from None
                time.sleep(0.5)
        yield {"url": url, "root": root, "log": home / "lab.log"}
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean stop: the server shuts its kernels down
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the server's own process group only
            proc.wait()
        log.close()


def pytest_terminal_summary(terminalreporter) -> None:
    """One line: how many widget controls the browser test moved, and in how long."""
    if not RESULTS:
        return
    RESULTS.pop("_start", None)
    seconds = RESULTS.pop("_seconds", float("nan"))
    controls = sum(c for c, _ in RESULTS.values())
    moves = sum(m for _, m in RESULTS.values())
    per = ", ".join(f"{k}: {c}" for k, (c, _) in RESULTS.items())
    terminalreporter.write_line(f"browser test: {controls} widget controls moved ({moves} moves) "
                                f"in {seconds:.0f} s; {per}")
