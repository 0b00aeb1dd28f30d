"""The HTML report in a real headless Chromium: it renders, it is not blank, nothing fails.

Driven over the DevTools protocol, which reports what a screenshot alone cannot: uncaught
exceptions, console errors, every network request the page makes (a self-contained report
makes none but its own file and data: URLs), and whether each embedded image decoded.
Two control pages check that the probe does see a script error and an outside request.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_fixtures import make_result

from latentcause.reports import render_html

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]

websocket = pytest.importorskip("websocket")
Image = pytest.importorskip("PIL.Image")

WIDTH = 1200


class Page:
    """One headless Chromium with one page, driven over the DevTools websocket."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--window-size={WIDTH},2400", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:  # noqa: S310
            targets = json.load(r)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self.events.append(json.loads(self.ws.recv()))

    def open(self, url: str) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=2400,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        time.sleep(0.3)  # let late console messages arrive
        self.call("Runtime.evaluate", expression="1")

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")

    def screenshot(self) -> bytes:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": size["height"], "scale": 1}
        shot = self.call("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)
        return base64.b64decode(shot["data"])

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                desc = d.get("exception", {}).get("description", "")
                out.append(f"{d.get('text', 'Uncaught')} {desc}".strip())
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console " + json.dumps(p.get("args")))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append("log " + p["entry"].get("text", ""))
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def page(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    p = Page(profile)
    yield p
    p.close()


def test_report_renders_in_chromium(page, tmp_path):
    res = make_result(seed=3, components=("front-end", "orders", "<script>alert(1)</script>"),
                      root="<script>alert(1)</script>")
    path = tmp_path / "report.html"
    path.write_text(render_html(res.report, res.idata), encoding="utf-8")
    page.open(path.as_uri())

    assert page.errors() == []
    outside = [u for u in page.requests() if not u.startswith(("file:", "data:"))]
    assert outside == []
    images = page.evaluate(
        "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == 4
    assert all(ok and w > 400 and h > 100 for ok, w, h in images)
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    assert "<script>alert(1)</script>" in page.evaluate("document.body.innerText")

    png = page.screenshot()
    (tmp_path / "shot.png").write_bytes(png)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    assert img.shape[1] == WIDTH and img.shape[0] > 3000  # the whole page, plots included
    gray = img.mean(axis=2)
    assert gray.std() > 20  # not blank
    assert (gray < 128).mean() > 0.01  # dark text on white
    assert np.median(gray) > 240  # a white page
    bars = np.all(np.abs(img - np.array([0x2F, 0x5D, 0x95])) < 12, axis=2).sum()
    assert bars > 2000  # the posterior bars were drawn


def test_probe_sees_a_script_error_and_an_outside_request(page, tmp_path):
    path = tmp_path / "control.html"
    path.write_text('<!DOCTYPE html><p>control</p><img src="http://127.0.0.1:9/x.png">'
                    '<script>throw new Error("boom")</script>')
    page.open(path.as_uri())
    assert any(e.startswith("Uncaught") and "boom" in e for e in page.errors())
    assert "http://127.0.0.1:9/x.png" in page.requests()
