"""A small W3C WebDriver client for Debian's chromium + chromium-driver (tests only).

Why not Selenium: a handful of endpoints (new session, navigate, execute script, type,
screenshot) are all the status-page tests need, and httpx is already a dependency.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
from e2e import wait_for

CHROMIUM = "/usr/bin/chromium"
MISSING = (
    "Debian's chromium and chromium-driver are not installed: run `make test` as root, which "
    "installs them, or `sudo apt-get install chromium chromium-driver`"
)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--window-size=1400,900"]


def driver_binary() -> str | None:
    if not Path(CHROMIUM).exists():
        return None
    return shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    def __init__(self, profile: Path) -> None:
        binary = driver_binary()
        assert binary is not None, MISSING
        self.port = _free_port()
        self.proc = subprocess.Popen([binary, f"--port={self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        try:  # chromedriver answers /status once it listens
            wait_for(self._ready, 20, "chromedriver to answer /status as ready")
        except AssertionError as exc:
            self.close()
            raise RuntimeError(str(exc)) from None
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM, "args": [*ARGS, f"--user-data-dir={profile}"]}}
        reply = self.http.post("/session", json={"capabilities": {"alwaysMatch": caps}}).json()
        self.session = reply["value"]["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self.http.request(method, f"/session/{self.session}{path}", json=body)
        data = r.json()
        if r.status_code >= 400:
            raise RuntimeError(f"webdriver {path}: {data['value'].get('message')}")
        return data["value"]

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def type(self, css: str, text: str) -> None:
        """Keystrokes into the element `css` selects (WebDriver focuses it first), as a
        person types: key events, the value growing one character at a time."""
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        element = next(iter(found.values()))  # the W3C element reference
        self._call("POST", f"/element/{element}/value", {"text": text})

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", "/screenshot"))

    def resize(self, width: int, height: int) -> None:
        """The viewport's size: a screenshot shows the viewport only, so a document picture
        sizes it to the page first. Through the DevTools protocol (chromedriver's
        `goog/cdp/execute`): a headless window is not made taller than its screen."""
        self._call("POST", "/goog/cdp/execute", {
            "cmd": "Emulation.setDeviceMetricsOverride",
            "params": {"width": width, "height": height, "deviceScaleFactor": 1,
                       "mobile": False}})

    def _ready(self) -> bool:
        try:
            return bool(self.http.get("/status").json()["value"]["ready"])
        except (httpx.HTTPError, KeyError, ValueError):
            return False

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self.http.delete(f"/session/{self.session}")
        finally:
            self.http.close()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
