"""The built documentation site as a reader's browser shows it: headless Chromium (Debian's package),
offline, on pages served from a loopback HTTP server.

- The registration's Mermaid diagram renders: MkDocs Material draws it into a closed shadow root, so
  the test asks Chromium itself (the DevTools protocol over a pipe, ``--remote-debugging-pipe``) for
  the page's DOM with shadow roots pierced, and finds the ``<svg>`` inside the diagram's container.
  Mermaid is served by the site (scripts/test.sh fetches it from the npm registry): with no network,
  a CDN copy could not load.
- The command line reference lists every command, as rendered text.

Skipped, saying why, where Chromium or the fetched Mermaid is missing (.ci/run installs Chromium).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docs_site import MERMAID_JS, build_or_fail, generator

pytestmark = [pytest.mark.e2e]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]
RENDER_TIMEOUT = 30.0


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("Chromium NOT RUN on the docs: Debian's `chromium` package is not installed (.ci/run installs it)")


class DevTools:
    """Chromium's DevTools protocol over ``--remote-debugging-pipe``: JSON messages ending in NUL, the
    browser reading commands on its fd 3 and writing answers and events on its fd 4."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._answers, from_browser = os.pipe()

        def child_fds() -> None:
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        # the pipe ends moved above 4 first, so that placing one at 3 or 4 cannot overwrite the other
        to_browser, from_browser = (os.dup(fd) if fd <= 4 else fd for fd in (to_browser, from_browser))
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,  # the only way to place the pipe at fds 3 and 4
            pass_fds=(3, 4, to_browser, from_browser),
            start_new_session=True,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._answers], [], [], remaining)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise ConnectionError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + RENDER_TIMEOUT
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + RENDER_TIMEOUT
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(index)
            self.events.append(self._read(deadline))

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError, ConnectionError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._commands)
        os.close(self._answers)


class Page:
    def __init__(self, tools: DevTools) -> None:
        self.tools = tools
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tools.send("Page.enable", session=self.session)

    def open(self, url: str) -> None:
        self.tools.send("Page.navigate", {"url": url}, session=self.session)
        self.tools.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        answer = self.tools.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=self.session
        )
        return answer["result"].get("value")

    def document(self) -> dict[str, Any]:
        """The DOM, shadow roots included (closed ones too: the protocol sees them, page scripts cannot)."""
        return self.tools.send("DOM.getDocument", {"depth": -1, "pierce": True}, session=self.session)["root"]


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in (*node.get("children", ()), *node.get("shadowRoots", ()), node.get("contentDocument") or {}):
        if child:
            yield from nodes(child)


def classes(node: dict[str, Any]) -> list[str]:
    attributes = node.get("attributes", [])
    pairs = dict(zip(attributes[::2], attributes[1::2], strict=True))
    return pairs.get("class", "").split()


@pytest.fixture(scope="module")
def served_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MERMAID_JS.is_file():
        pytest.skip(
            f"Mermaid NOT CHECKED in a browser: {MERMAID_JS} is missing (scripts/test.sh fetches it with npm); "
            "the site would load it from a CDN this machine cannot reach"
        )
    site = build_or_fail(tmp_path_factory.mktemp("site"))
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    tools = DevTools(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield tools
    finally:
        tools.close()


def test_the_registration_diagram_renders_as_svg(served_site: str, browser: DevTools) -> None:
    page = Page(browser)
    page.open(f"{served_site}/how-it-works/registration/")
    deadline = time.monotonic() + RENDER_TIMEOUT
    while True:
        document = page.document()
        containers = [node for node in nodes(document) if "mermaid" in classes(node)]
        drawn = [
            svg
            for container in containers
            for svg in nodes(container)
            if svg.get("localName") == "svg" and svg is not container
        ]
        if drawn or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert containers, "the page has no Mermaid container"
    assert drawn, "the Mermaid diagram did not render into an <svg>"
    labels = " ".join(node.get("nodeValue", "") for svg in drawn for node in nodes(svg))
    assert "Claim the token" in labels  # the diagram's own text, drawn
    assert not page.evaluate("document.querySelectorAll('pre.mermaid, code.mermaid').length")  # no source left
    loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert any(name.startswith(served_site) and name.endswith("/mermaid.min.js") for name in loaded), loaded


def test_the_command_line_reference_lists_every_command(served_site: str, browser: DevTools) -> None:
    page = Page(browser)
    page.open(f"{served_site}/reference/cli/")
    text = page.evaluate("document.body.innerText")
    missing = [path for path in generator().command_paths() if path not in text]
    assert missing == []
    assert "--token-id" in text and "--public-key" in text
