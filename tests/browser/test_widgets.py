"""Every widget of the course, used in a real browser: JupyterLab in headless Chromium.

For each notebook whose stored outputs hold a widget view (found by glob, so new chapters are
covered without editing this file) the test opens it in JupyterLab, runs all cells, and then
moves every control of every widget the way a learner would: a slider by the arrow keys and
again by typing a value into its readout box, each dropdown to another option, toggle buttons,
checkboxes, radio buttons and buttons by clicking. After each move the widget's output (its
text and its images) must change. A control that is disabled or hidden is moved once another
control makes it usable; one that never becomes usable fails the test. Throughout: no error in
the browser console and no traceback in any output.

All notebooks are started at once (their kernels run side by side) and then checked one by
one; the number of controls moved and the run time are printed at the end of the session.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from pathlib import Path

import pytest

from .browser_support import NOTEBOOKS, RESULTS, WIDGET_VIEW, widget_notebooks

RUN_ALL_TIMEOUT = 240  # seconds for Run All of one notebook (all run side by side)
CHANGE_TIMEOUT = 60  # seconds for a widget's output to respond to one move
SETTLE = 0.75  # seconds an output must stay the same to count as redrawn
MAX_OPTIONS_TRIED = 12  # per dropdown, when looking for a setting that enables a control

PATHS = widget_notebooks()
IDS = [p.relative_to(NOTEBOOKS).as_posix() for p in PATHS]

# In the page: mark each top-level widget view (data-test-root) and return how many.
MARK_ROOTS = """() => {
  let n = 0;
  for (const e of document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')) {
    if (e.querySelector(':scope > .jupyter-widgets')
        && !e.parentElement.closest('.jupyter-widgets'))
      e.setAttribute('data-test-root', n++);
  }
  return n;
}"""

# In the page: the controls of one widget (outside its output areas), each marked with
# data-test-control and described by kind, label, disabled and visible.
FIND_CONTROLS = """root => {
  const outside = el => !el.closest('.widget-output');
  const found = [];
  const seen = new Set();
  const add = (el, kind, disabled) => {
    if (seen.has(el)) return;
    seen.add(el);
    if (!el.hasAttribute('data-test-control')) {
      const next = Number(root.getAttribute('data-test-next') || 0);
      root.setAttribute('data-test-next', next + 1);
      el.setAttribute('data-test-control', root.getAttribute('data-test-root') + '-' + next);
    }
    const label = el.querySelector('.widget-label');
    found.push({id: el.getAttribute('data-test-control'), kind,
                label: (label ? label.textContent : el.textContent).trim().slice(0, 40),
                disabled: !!disabled, visible: el.offsetParent !== null});
  };
  for (const s of root.querySelectorAll('.noUi-target')) if (outside(s))
    add(s.closest('.widget-slider') || s.parentElement, 'slider', s.hasAttribute('disabled'));
  for (const s of root.querySelectorAll('select')) if (outside(s))
    add(s.closest('.widget-inline-hbox') || s, 'select', s.disabled);
  for (const b of root.querySelectorAll('.widget-toggle-buttons')) if (outside(b))
    add(b, 'toggle-buttons', [...b.querySelectorAll('button')].every(x => x.disabled));
  for (const b of root.querySelectorAll('button'))
    if (outside(b) && !b.closest('.widget-toggle-buttons'))
    add(b, b.classList.contains('widget-toggle-button') ? 'toggle-button' : 'button', b.disabled);
  for (const i of root.querySelectorAll('input[type=checkbox]')) if (outside(i))
    add(i.closest('.widget-checkbox') || i, 'checkbox', i.disabled);
  for (const r of root.querySelectorAll('.widget-radio-box')) if (outside(r))
    add(r.closest('.widget-radio') || r, 'radio',
        [...r.querySelectorAll('input')].every(x => x.disabled));
  for (const i of root.querySelectorAll('input:not([type=checkbox]):not([type=radio]), textarea'))
    if (outside(i) && !i.closest('.widget-radio-box'))
      add(i.closest('.widget-inline-hbox') || i, 'text', i.disabled);
  // anything else a learner could type into or drag that the kinds above do not cover
  for (const e of root.querySelectorAll('[contenteditable=true]:not(.widget-readout)'))
    if (outside(e)) add(e, 'unknown', false);
  return found;
}"""

# In the page: what the widget shows: the text and images of its output areas.
SNAPSHOT = """root => {
  const outs = root.querySelectorAll('.widget-output');
  const parts = [];
  for (const o of (outs.length ? outs : [root])) {
    parts.push(o.innerText);
    for (const img of o.querySelectorAll('img'))
      parts.push(img.src.slice(0, 11) + img.src.length + ':' + img.src.slice(-200));
    for (const svg of o.querySelectorAll('svg')) parts.push(svg.outerHTML.length);
  }
  return parts.join('\\n');
}"""


def _stored_widget_views(path: Path) -> int:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return sum(WIDGET_VIEW in out.get("data", {}) for cell in nb["cells"]
               if cell["cell_type"] == "code" for out in cell.get("outputs", []))


def _idle(page) -> bool:
    """The kernel is idle: no cell running and no widget callback (the status bar's
    "| Idle" follows the kernel's own status messages, comm messages included)."""
    return (page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count() > 0
            and page.locator(".jp-StatusBar-TextItem",
                             has_text=re.compile(r"\| Idle$")).count() > 0)


def _tracebacks(page) -> list[str]:
    texts = page.eval_on_selector_all(
        ".jp-Notebook .jp-OutputArea-output",
        "els => els.map(e => e.innerText)"
        ".filter(t => t.includes('Traceback (most recent call last)')"
        " || /^\\w*(Error|Exception)\\b.*$/m.test(t) && t.includes('----> '))")
    return [t[-3000:] for t in texts]


class Widget:
    """One widget view in the page, and the moves made on it."""

    def __init__(self, page, root: int, where: str) -> None:
        self.page = page
        self.root = page.locator(f'[data-test-root="{root}"]')
        self.where = where
        self.moved: list[str] = []

    def snapshot(self) -> str:
        return self.root.evaluate(SNAPSHOT)

    def controls(self) -> list[dict]:
        return self.root.evaluate(FIND_CONTROLS)

    def control(self, desc: dict):
        return self.page.locator(f'[data-test-control="{desc["id"]}"]')

    def state(self, desc: dict) -> dict:
        return next(c for c in self.controls() if c["id"] == desc["id"])

    def wait_changed(self, before: str, what: str) -> str:
        """Wait until the output differs from ``before`` and has settled, with no traceback
        in it; return it."""
        deadline = time.monotonic() + CHANGE_TIMEOUT
        images = before.count("data:image")
        now = self.snapshot()
        while now == before:
            if time.monotonic() > deadline:
                pytest.fail(f"{self.where}: {what}: the widget's output did not change in "
                            f"{CHANGE_TIMEOUT} s", pytrace=False)
            time.sleep(0.1)
            now = self.snapshot()
        while True:  # redrawn: unchanged for SETTLE seconds with the kernel idle
            time.sleep(SETTLE)
            later = self.snapshot()
            if later == now and _idle(self.page):
                shown = _tracebacks(self.page)
                assert not shown, f"{self.where}: {what}: a traceback:\n{shown[0]}"
                if later.count("data:image") >= images:  # the plot is back too
                    return later
            if time.monotonic() > deadline:
                pytest.fail(f"{self.where}: {what}: no steady output with the kernel idle in "
                            f"{CHANGE_TIMEOUT} s (output steady: {later == now}; images "
                            f"{later.count('data:image')} of {images}; kernel idle: "
                            f"{_idle(self.page)})", pytrace=False)
            now = later

    def move(self, desc: dict) -> None:
        """Move one control; each step must change the output."""
        el, kind, label = self.control(desc), desc["kind"], desc["label"]
        what = f"{kind} {label!r}"
        el.scroll_into_view_if_needed()
        if kind == "slider":
            handle = el.locator(".noUi-handle").first
            value, top = (float(handle.get_attribute(a))
                          for a in ("aria-valuenow", "aria-valuemax"))
            readout = el.locator(".widget-readout")
            typed = readout.inner_text().strip() if readout.count() else ""
            before = self.snapshot()
            handle.focus()
            handle.press("ArrowLeft" if value >= top else "ArrowRight")
            self.wait_changed(before, f"{what} moved by an arrow key")
            self.moved.append(f"{what} (keys)")
            if typed and _typable(typed, value):
                before = self.snapshot()
                readout.click()
                self.page.keyboard.press("ControlOrMeta+a")
                self.page.keyboard.type(typed)
                self.page.keyboard.press("Enter")
                self.wait_changed(before, f"{what}: typing {typed} into its box")
                shown = readout.inner_text().strip()
                assert _same_number(shown, typed), (
                    f"{self.where}: {what}: typed {typed}, the box shows {shown!r}")
                self.moved.append(f"{what} (typed)")
        elif kind == "select":
            select = el.locator("select")
            options = select.locator("option").all_inner_texts()
            current = select.evaluate("s => s.selectedIndex")
            before = self.snapshot()
            select.select_option(index=(current + 1) % len(options))
            self.wait_changed(before, f"{what} set to {options[(current + 1) % len(options)]!r}")
            self.moved.append(what)
        elif kind in ("toggle-buttons", "radio"):
            sel = "button:not(.mod-active)" if kind == "toggle-buttons" else "input:not(:checked)"
            before = self.snapshot()
            el.locator(sel).first.click()
            self.wait_changed(before, f"{what} clicked")
            self.moved.append(what)
        elif kind in ("toggle-button", "button", "checkbox"):
            before = self.snapshot()
            (el.locator("input") if kind == "checkbox" else el).click()
            self.wait_changed(before, f"{what} clicked")
            self.moved.append(what)
        elif kind == "text":
            box = el.locator("input, textarea").first
            before = self.snapshot()
            box.click()
            if box.get_attribute("type") == "number":
                box.press("ArrowUp")
            else:
                box.press("End")
                self.page.keyboard.type("x")
            box.press("Enter")
            self.wait_changed(before, f"{what} edited")
            self.moved.append(what)
        else:
            pytest.fail(f"{self.where}: a control the test does not know how to move: {desc}",
                        pytrace=False)

    def exercise(self) -> None:
        """Move every control; then make usable, and move, those that were not."""
        done: set[str] = set()
        for _ in range(3):
            todo = [c for c in self.controls()
                    if c["id"] not in done and c["visible"] and not c["disabled"]]
            if not todo:
                break
            for desc in todo:
                if not self.state(desc)["disabled"]:  # an earlier move may have disabled it
                    self.move(desc)
                    done.add(desc["id"])
        waiting = [c for c in self.controls() if c["id"] not in done]
        for chooser in [c for c in self.controls() if c["kind"] == "select"]:
            if not waiting:
                break
            select = self.control(chooser).locator("select")
            options = select.locator("option").all_inner_texts()[:MAX_OPTIONS_TRIED]
            for i in range(len(options)):
                if select.evaluate("s => s.selectedIndex") != i:
                    before = self.snapshot()
                    select.select_option(index=i)
                    self.wait_changed(before, f"select {chooser['label']!r} set to {options[i]!r}")
                for desc in list(waiting):
                    now = self.state(desc)
                    if now["visible"] and not now["disabled"]:
                        self.move(desc)
                        waiting.remove(desc)
                if not waiting:
                    break
        assert not waiting, (f"{self.where}: controls never usable whatever the other controls "
                             f"say: {[(c['kind'], c['label']) for c in waiting]}")
        assert self.moved, f"{self.where}: a widget with no control"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _typable(readout: str, position: float) -> bool:
    """Whether the slider takes a typed value: its box shows the value it is at (a number
    slider, linear or log), not a label of a position (a selection slider, whose box
    ipywidgets does not read back)."""
    value = _number(readout)
    if value is None:
        return False
    scale = max(1.0, abs(position))
    if math.isclose(value, position, rel_tol=0.05, abs_tol=0.05 * scale):
        return True
    return value > 0 and math.isclose(math.log10(value), position, abs_tol=0.051)


def _same_number(shown: str, typed: str) -> bool:
    a, b = _number(shown), _number(typed)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-12)


def _start_kernel(url: str, rel: str) -> None:
    """A session with a ``python3`` kernel for the notebook, through the server's REST API."""
    body = json.dumps({"path": rel, "name": rel, "type": "notebook",
                       "kernel": {"name": "python3"}}).encode()
    request = urllib.request.Request(f"{url}/api/sessions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 201, answer.read()


def _stop_kernel(url: str, rel: str) -> None:
    """Shut the notebook's kernel down (the rest of the suite needs the memory and cores)."""
    with urllib.request.urlopen(f"{url}/api/sessions", timeout=30) as answer:
        sessions = json.loads(answer.read())
    for session in sessions:
        if session["path"] == rel:
            request = urllib.request.Request(f"{url}/api/sessions/{session['id']}",
                                             method="DELETE")
            urllib.request.urlopen(request, timeout=60).close()


def _wait_kernel_ready(page, rel: str) -> None:
    """Wait for the notebook's kernel to be idle, accepting the kernel-choice dialog that
    JupyterLab shows when it opens a notebook before it has read the kernel list."""
    deadline = time.monotonic() + 120
    while True:
        dialog = page.locator(".jp-Dialog .jp-mod-accept")
        if dialog.count():
            dialog.first.click()
        elif page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count():
            time.sleep(0.5)
            if not page.locator(".jp-Dialog").count():
                return
        assert time.monotonic() < deadline, f"{rel}: the kernel did not start in 120 s"
        time.sleep(0.25)


@pytest.fixture(scope="session")
def started(request, browser, lab):
    """Every widget notebook this session tests, open in its own tab with Run All clicked;
    the kernels run side by side while the tests check the notebooks one by one."""
    # doctest and notebook items have no originalname
    wanted = {item.callspec.params["rel"] for item in request.session.items
              if getattr(item, "originalname", None)
              == "test_every_widget_control_changes_the_output"}
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    tabs = {}
    start = time.monotonic()
    for i, rel in enumerate(r for r in IDS if r in wanted):
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m, e=errors: e.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda exc, e=errors: e.append(f"page error: {exc}"))
        _start_kernel(lab["url"], rel)  # else JupyterLab may ask which kernel to start
        page.goto(f"{lab['url']}/lab/workspaces/test{i}/tree/{rel}?reset")
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
        _wait_kernel_ready(page, rel)
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
        tabs[rel] = (page, errors)
    RESULTS["_start"] = start
    yield tabs
    context.close()


@pytest.mark.slow
@pytest.mark.parametrize("rel", IDS)
def test_every_widget_control_changes_the_output(started, lab, rel):
    page, errors = started[rel]
    try:
        _check_notebook(page, errors, rel)
    finally:
        page.close()
        _stop_kernel(lab["url"], rel)
        RESULTS["_seconds"] = time.monotonic() - RESULTS["_start"]


def _check_notebook(page, errors: list[str], rel: str) -> None:
    where = rel
    # Run All is over when no cell waits ([*]) and the kernel is idle, twice in a row.
    deadline = time.monotonic() + RUN_ALL_TIMEOUT
    calm = 0
    while calm < 2:
        prompts = [p.strip() for p in page.eval_on_selector_all(
            ".jp-Notebook .jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent)")]
        calm = calm + 1 if "[*]:" not in prompts and _idle(page) else 0
        assert not _tracebacks(page), f"{where}: traceback while running:\n{_tracebacks(page)}"
        assert time.monotonic() < deadline, f"{where}: Run All not done in {RUN_ALL_TIMEOUT} s"
        time.sleep(0.5)
    counts = [int(m.group(1)) for p in prompts if (m := re.fullmatch(r"\[(\d+)\]:", p))]
    assert counts and counts == sorted(set(counts)) and counts[0] == 1, (
        f"{where}: not every cell ran in order in this kernel: {prompts}")

    views = page.evaluate(MARK_ROOTS)
    assert views == _stored_widget_views(NOTEBOOKS / rel), (
        f"{where}: {views} widgets drawn, the stored notebook has "
        f"{_stored_widget_views(NOTEBOOKS / rel)}")
    moves = controls = 0
    for i in range(views):
        widget = Widget(page, i, f"{where} widget {i + 1}")
        widget.exercise()
        print(f"{where} widget {i + 1}: {len(widget.moved)} moves: {'; '.join(widget.moved)}")
        moves += len(widget.moved)
        controls += len(widget.controls())
    RESULTS[rel] = (controls, moves)
    assert not _tracebacks(page), f"{where}: traceback in an output:\n{_tracebacks(page)}"
    assert not errors, f"{where}: browser console errors:\n" + "\n".join(errors)
