"""The static book in the browser, offline: each widget's saved view is drawn.

The book (built by ``.ci/book``) is served from a local folder; every request that leaves
this server is refused, so a page that needed a CDN would show blank widgets and fail here.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from .browser_support import NOTEBOOKS, ROOT, widget_notebooks

OUT = ROOT / "_build" / "book"


@pytest.fixture(scope="module")
def served_book() -> Iterator[str]:
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run([str(ROOT / ".ci" / "book")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"book build failed:\n{done.stdout}\n{done.stderr}"
    handler = functools.partial(_QuietHandler, directory=str(OUT))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass


@pytest.mark.slow
def test_book_pages_draw_saved_widget_views_offline(browser, served_book):
    paths = widget_notebooks()
    assert paths, "no notebook with a widget: nothing for the book to show"
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console: {m.text}")
            if m.type == "error" and "favicon.ico" not in (m.location or {}).get("url", "")
            else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    outside: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(served_book + "/") or url.startswith("data:"):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    context.route("**/*", route)
    try:
        for path in paths:
            rel = path.relative_to(NOTEBOOKS).with_suffix(".html").as_posix()
            page.goto(f"{served_book}/{rel}")
            page.wait_for_load_state("networkidle")
            # the manager draws the saved views: the controls and the saved output, plot included
            page.wait_for_selector(".jupyter-widgets .widget-output img", timeout=30_000)
            controls = page.locator(".jupyter-widgets select, .jupyter-widgets .noUi-target,"
                                    " .jupyter-widgets button, .jupyter-widgets input")
            assert controls.count() > 0, f"{rel}: no widget control drawn"
            assert "widget-view" not in page.locator("main").inner_text(), rel
    finally:
        context.close()
    assert not outside, f"the book reached outside itself: {outside}"
    assert not problems, "\n".join(problems)

