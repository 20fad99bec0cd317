"""Headless Debian Chromium driven through chromedriver's W3C WebDriver HTTP API (requests only).

The protocol is a handful of JSON calls (https://www.w3.org/TR/webdriver2/), so no client library
joins the requirements for the few a page test needs: navigate, cookies, find, frames, source, screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def missing() -> str | None:
    """Why the browser tests cannot run here (tools/system-deps.sh installs both), or None."""
    for command, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if not shutil.which(command):
            return f"{command} is not installed (Debian package {package})"
    return None


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One chromedriver process and one headless Chromium session; use as a context manager."""

    def __init__(self, log_path: Path, width: int = 1400, height: int = 1000):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._log = log_path.open("wb")
        self._driver = subprocess.Popen([shutil.which("chromedriver") or "chromedriver", f"--port={port}"],
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self._base = f"http://127.0.0.1:{port}"
        try:
            self._start_session(width, height)
        except BaseException:
            self.close()
            raise

    def _start_session(self, width: int, height: int) -> None:
        self._wait_ready()
        options = {"binary": shutil.which("chromium"),
                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--window-size={width},{height}"]}
        session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}})
        self._session = f"/session/{session['sessionId']}"

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(requests.RequestException, WebDriverError, AttributeError):
            self._call("DELETE", self._session)  # no session when creating it failed
        self._driver.terminate()
        try:
            self._driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._driver.kill()
            self._driver.wait()
        self._log.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self._base}/status", timeout=2).json()["value"]["ready"]:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise WebDriverError("chromedriver did not become ready in 30 s")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, f"{self._base}{path}", json=body, timeout=60)
        value = response.json().get("value")
        if response.status_code != 200:
            raise WebDriverError(f"{method} {path}: {response.status_code} {value}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", f"{self._session}/url", {"url": url})

    def add_cookie(self, name: str, value: str) -> None:
        """A cookie for the current page's host (navigate there first, as in any browser)."""
        self._call("POST", f"{self._session}/cookie", {"cookie": {"name": name, "value": value, "path": "/"}})

    def source(self) -> str:
        return self._call("GET", f"{self._session}/source")

    def find(self, css: str) -> list[str]:
        """Element references matching `css` in the current frame."""
        found = self._call("POST", f"{self._session}/elements", {"using": "css selector", "value": css})
        return [element[ELEMENT] for element in found]

    def wait_for(self, css: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(css)
            if found:
                return found[0]
            time.sleep(0.5)
        raise WebDriverError(f"no element matches {css!r} after {timeout:.0f} s")

    def attribute(self, element: str, name: str) -> str | None:
        return self._call("GET", f"{self._session}/element/{element}/attribute/{name}")

    def text(self, element: str) -> str:
        return self._call("GET", f"{self._session}/element/{element}/text")

    def click(self, element: str) -> None:
        self._call("POST", f"{self._session}/element/{element}/click", {})

    def frame(self, element: str | None) -> None:
        """Switch into the iframe `element`, or back to the top document with None."""
        self._call("POST", f"{self._session}/frame", {"id": None if element is None else {ELEMENT: element}})

    def execute(self, script: str, *args: Any) -> Any:
        return self._call("POST", f"{self._session}/execute/sync", {"script": script, "args": list(args)})

    def resize(self, width: int, height: int) -> None:
        self._call("POST", f"{self._session}/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """A PNG of the viewport (or the whole document: the window grows to its height first)."""
        if full_page:
            height = self.execute("return document.documentElement.scrollHeight")
            width = self.execute("return window.outerWidth")
            self.resize(width, min(int(height) + 150, 8000))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", f"{self._session}/screenshot")))
        return path
