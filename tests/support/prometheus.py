"""A real Prometheus server for tests (Debian's /usr/bin/prometheus): a temporary config that scrapes the given
targets every second, its database under the test's tmp_path, its HTTP API on a free loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.net import free_port

PROMETHEUS = "/usr/bin/prometheus"


def missing() -> str | None:
    return None if shutil.which(PROMETHEUS) else f"{PROMETHEUS} is not installed (apt-get install prometheus)"


class Prometheus:
    """One Prometheus process; `query()` asks its HTTP API, `wait_for()` polls a query until it answers."""

    def __init__(self, directory: Path, targets: list[str], interval: str = "1s") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = directory / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [{"job_name": "rover-safety", "static_configs": [{"targets": targets}]}],
        }))
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:  # no caller gets this object to close: end the process here
            self.close()
            raise

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"prometheus was not ready within {timeout:g} s:\n{self.log.read_text()}")

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's result vector (each {"metric": {...}, "value": [time, "text"]})."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as reply:
            active: list[dict[str, Any]] = json.load(reply)["data"]["activeTargets"]
            return active

    def wait_for(self, expression: str, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0,
                 ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expression)
            if check(result):
                return result
            time.sleep(0.2)
        raise AssertionError(f"prometheus: {expression} gave {result} for {timeout:g} s; targets: {self.targets()}")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def prometheus(directory: Path, targets: list[str], interval: str = "1s") -> Iterator[Prometheus]:
    server = Prometheus(directory, targets, interval)
    try:
        yield server
    finally:
        server.close()
