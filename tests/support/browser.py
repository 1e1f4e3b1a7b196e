"""The operator page from the outside: a real headless Chromium (Debian's chromium and chromedriver through
Selenium, nothing downloaded), and a plain HTTP client of the page for the tests that need no browser.

Chromium runs with a fresh profile and without any of its background connections (this machine has no network, and
a test must not depend on one); as root it needs --no-sandbox.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-features=Translate,MediaRouter,OptimizationHints", "--password-store=basic")
COOKIE = "__Host-rover-safety"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    return None


class Browser:
    """One headless Chromium with the page's own helpers: open, wait for what the page shows, hold a drive arrow."""

    def __init__(self, *, width: int = 1000, height: int = 1000, insecure_certificates: bool = False) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.accept_insecure_certs = insecure_certificates  # the daemon's self-signed certificate
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_script_timeout(10)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def fresh_tab(self) -> None:
        """Start over in a new tab (its own viewport, no emulation) and close every other one."""
        old = list(self.driver.window_handles)
        for handle in reversed(old):  # a new tab opens from a tab that has not crashed
            try:
                self.driver.switch_to.window(handle)
                self.driver.switch_to.new_window("tab")
                break
            except WebDriverException:
                continue
        new = self.driver.current_window_handle
        for handle in old:
            try:
                self.driver.switch_to.window(handle)
                self.driver.close()
            except WebDriverException:
                pass  # a crashed tab
        self.driver.switch_to.window(new)

    def spare_tab(self) -> str:
        """Open a blank tab beside this one and come back (before the page opens: leaving a page blurs it); the
        browser can go on from the spare once this tab is closed or crashed."""
        here = self.driver.current_window_handle
        self.driver.switch_to.new_window("tab")
        spare = self.driver.current_window_handle
        self.driver.switch_to.window(here)
        return spare

    def open(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: object) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, condition: Callable[[], object], timeout: float = 10.0, what: str = "the page") -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except WebDriverException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; the page shows:\n"
                                     f"{self.text()}")
            time.sleep(0.02)

    def text(self, selector: str = "body") -> str:
        """What the element shows, read in one go (the page re-renders its lists at every snapshot)."""
        try:
            return str(self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                               selector))
        except WebDriverException as exc:
            return f"({exc.msg})"

    def element(self, selector: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def shown(self, selector: str) -> bool:
        return bool(self.js("const e = document.querySelector(arguments[0]); return !!e && !e.closest('[hidden]');",
                            selector))

    def live(self) -> None:
        """Wait until the page shows the daemon's live state (the event stream is open and has sent a snapshot)."""
        self.wait(lambda: self.text("#link") == "live" and self.js("return document.querySelectorAll("
                                                                   "'#resources li[data-resource]').length > 0"),
                  what="the live view")

    def session_tags(self) -> list[str]:
        return list(self.js("return [...document.querySelectorAll('#sessions li[data-tag]')]"
                            ".map(e => e.dataset.tag)"))

    def expiry_tags(self) -> list[str]:
        return list(self.js("return [...document.querySelectorAll('#expiries li[data-tag]')]"
                            ".map(e => e.dataset.tag)"))

    def resource_moving(self, name: str) -> bool:
        return bool(self.js("const e = document.querySelector(`#resources li[data-resource='${arguments[0]}']`);"
                            "return !!e && e.classList.contains('moving');", name))

    def hold(self, direction: str) -> ActionChains:
        """Press and hold a drive arrow with the mouse (pointerdown); `.release()` on the result lets go."""
        button = self.element(f"#pad [data-dir={direction}]")
        actions = ActionChains(self.driver)
        actions.click_and_hold(button).perform()
        return actions

    def let_go(self, actions: ActionChains) -> None:
        actions.release().perform()

    def drive_session(self) -> bool:
        return bool(self.js("return document.getElementById('drive-state').textContent.includes('heartbeat')"))

    def phone(self, width: int = 390, height: int = 844, scale: float = 2.0) -> None:
        """Look like a phone: its viewport, pixel ratio and touch."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": True})
        self.driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def offline(self) -> None:
        """The network goes away under the page (as a phone leaving Wi-Fi): every request from it fails."""
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})

    def crash_tab(self) -> None:
        """The tab's renderer dies at once: no pagehide, no visibilitychange, no request leaves it again."""
        with contextlib.suppress(WebDriverException):  # the command's answer dies with the renderer
            self.driver.execute_cdp_cmd("Page.crash", {})


@contextmanager
def browser(**options: Any) -> Iterator[Browser]:
    chromium = Browser(**options)
    try:
        yield chromium
    finally:
        chromium.close()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebClient:
    """A plain HTTP client of the page that keeps its cookie and CSRF token as the page's script does, connecting
    from a chosen loopback address (127.0.0.2 is another machine to the daemon's limits and logs)."""

    port: int
    host: str = "127.0.0.1"
    source: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None
    cookie: str = ""
    csrf: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls,
                                               source_address=(self.source, 0))
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout, source_address=(self.source, 0))

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                ) -> Reply:
        connection = self.connection()
        try:
            sent = dict(self.headers)
            if self.cookie:
                sent["Cookie"] = f"{COOKIE}={self.cookie}"
            sent.update(headers or {})
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            connection.close()
        self._keep_cookie(reply.headers)
        return reply

    def _keep_cookie(self, headers: http.client.HTTPMessage) -> None:
        for value in headers.get_all("Set-Cookie") or ():
            name, _, rest = value.partition("=")
            if name.strip() == COOKIE:
                self.cookie = rest.partition(";")[0]

    def state(self) -> dict[str, Any]:
        reply = self.request("GET", "/api/state")
        assert reply.status == 200, reply
        data: dict[str, Any] = reply.json()
        self.csrf = data["csrf"]
        return data

    def post(self, path: str, body: dict[str, Any] | None = None, *, csrf: str | None = None,
             content_type: str = "application/json", headers: dict[str, str] | None = None) -> Reply:
        sent = {"Content-Type": content_type, "X-CSRF-Token": self.csrf if csrf is None else csrf}
        sent.update(headers or {})
        return self.request("POST", path, json.dumps(body or {}).encode(), sent)

    def login(self, key_id: str, key: str) -> Reply:
        reply = self.post("/api/login", {"key_id": key_id, "key": key})
        if reply.status == 200:
            self.csrf = reply.json()["csrf"]
        return reply

    @contextmanager
    def events(self, timeout: float = 10.0) -> Iterator[EventReader]:
        """The page's event stream, read one server-sent event at a time."""
        connection = self.connection(timeout)
        try:
            connection.request("GET", "/api/events", headers={"Cookie": f"{COOKIE}={self.cookie}"})
            yield EventReader(connection.getresponse())
        finally:
            connection.close()


class EventReader:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response
        self.status = response.status

    def next(self) -> tuple[str, dict[str, Any]]:
        """The next event: its name ("message" for a plain data line) and its JSON."""
        name, data = "message", ""
        while True:
            line = self.response.readline().decode()
            if not line:
                raise EOFError("the event stream ended")
            line = line.rstrip("\n")
            if not line:
                if data:
                    return name, json.loads(data)
                continue
            key, _, value = line.partition(": ")
            if key == "event":
                name = value
            elif key == "data":
                data += value

    def until(self, predicate: Callable[[str, dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name, data = self.next()
            if predicate(name, data):
                return data
        raise AssertionError(f"no such event within {timeout:g} s")


def with_page(config: str, address: str = "127.0.0.1:0", metrics: str | None = None) -> str:
    """A config's text with the operator page (and the metrics endpoint) on these addresses."""
    lines = f'  web: {{bind_address: "{address}"}}\n'
    if metrics is not None:
        lines += f'  metrics: {{bind_address: "{metrics}"}}\n'
    return config.replace("network:\n", "network:\n" + lines, 1)
