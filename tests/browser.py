"""Open a page in headless Debian Chromium over the DevTools protocol: console errors, uncaught
exceptions, network requests, what the DOM holds after the scripts ran, and a screenshot."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import stop_process


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)  # console.error, uncaught exceptions, error log entries
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    checked: Any = None  # the value of the check expression


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


async def _devtools_url(profile: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        if port_file.is_file():
            lines = port_file.read_text().split()
            if len(lines) == 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


async def open_page(path: Path, screenshot: Path, check: str, *, width: int = 1400, height: int = 1000,
                    timeout_s: float = 60.0) -> PageResult:
    """Load ``path``, wait for the ``check`` expression (a JS promise) and take a full-page screenshot."""
    exe = chromium()
    assert exe, "chromium is not installed (scripts/install-system-deps.sh)"
    result = PageResult()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-background-networking",
                                 "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
                                 "--remote-debugging-port=0", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            url = await _devtools_url(Path(profile), proc, 30)
            async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
                await asyncio.wait_for(_drive(ws, path, screenshot, check, width, height, result), timeout_s)
        finally:
            _stop_browser(proc)
    return result


def _stop_browser(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop chromium and every helper process it forked (renderer, GPU, crashpad), which keep
    writing into the profile after the main process exits: the profile can only be removed once
    the whole process group is gone."""
    stop_process(proc)
    deadline = time.monotonic() + timeout_s
    sig = signal.SIGTERM
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is empty
        if time.monotonic() > deadline - timeout_s / 2:
            sig = signal.SIGKILL
        time.sleep(0.05)


async def _drive(ws: Any, path: Path, screenshot: Path, check: str, width: int, height: int,
                 result: PageResult) -> None:
    ids = iter(range(1, 1_000_000))
    replies: dict[int, asyncio.Future[Any]] = {}
    loaded = asyncio.Event()

    async def reader() -> None:
        async for msg in ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in replies:
                replies.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                result.errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                            for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                result.errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                result.errors.append("log: " + params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                result.requests.append(params["request"]["url"])
            elif method == "Page.loadEventFired":
                loaded.set()

    async def call(method: str, session: str | None = None, **params: Any) -> Any:
        i = next(ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        replies[i] = fut
        msg: dict[str, Any] = {"id": i, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await ws.send_str(json.dumps(msg))
        reply = await fut
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    task = asyncio.create_task(reader())
    try:
        target = (await call("Target.createTarget", url="about:blank"))["targetId"]
        sid = (await call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            await call(f"{domain}.enable", sid)
        await call("Emulation.setDeviceMetricsOverride", sid, width=width, height=height, deviceScaleFactor=1,
                   mobile=False)
        await call("Page.navigate", sid, url=path.resolve().as_uri())
        await loaded.wait()
        value = await call("Runtime.evaluate", sid, expression=check, awaitPromise=True, returnByValue=True)
        result.checked = value["result"].get("value")
        shot = await call("Page.captureScreenshot", sid, format="png", captureBeyondViewport=True)
        import base64

        screenshot.write_bytes(base64.b64decode(shot["data"]))
    finally:
        task.cancel()
