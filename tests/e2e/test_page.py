"""The live page (daemon/http/page/) in a real browser: headless Chromium (Debian's
``chromium``) driven by Selenium through Debian's ``chromium-driver``, against a real daemon
fed known events by a real worker process. At 1280x800 and at a phone's 390x844: every series
shows with its exact count, every chart draws its series, a hostile model name renders as its
characters, nothing is requested outside the daemon's origin, the browser logs no error (a
Content-Security-Policy violation would be one), sorting and the range buttons work, and the
page follows new events without a reload.

The screenshots in docs/ come from this test: ``AI_ANALYTICS_SCREENSHOTS=1`` writes them
there (otherwise they go to the test's temporary folder, so a test run leaves the tree clean).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import REPO, read_config, run_python, status_where

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the test extra not installed: the browser tests say so and skip
    webdriver = None

PAGE = REPO / "daemon" / "http" / "page"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = [what for what, found in (
    ("chromium (Debian: apt-get install chromium; .ci/run installs it)", CHROMIUM),
    ("chromedriver (Debian: apt-get install chromium-driver; .ci/run installs it)", CHROMEDRIVER),
    ("selenium (pip install -e '.[test]')", webdriver),
) if found is None]
needs_browser = pytest.mark.skipif(bool(MISSING), reason="not installed: " + "; ".join(MISSING))

HOSTILE = "<img src=x onerror=alert(1)>"
# Each series's events per batch (chat, embed, generate). Counts under 1000 read the same in
# every locale's number format.
FIRST = (40, 30, 20)
MORE_CHAT = 25
# chat: quality, cache and TTFT; embed: one error in five; generate: the hostile model name.
WORKER = """
import sys
from ai_analytics import client
chat, embed, generate = map(int, sys.argv[1:4])
for i in range(chat):
    client.emit("chat", 100.0 + i, model="llama-3-8b", quality=0.9, cache_hit=i % 2 == 0,
                ttft_ms=20.0 + i % 5)
for i in range(embed):
    client.emit("embed", 5.0 + i % 7, model="bge-small", success=i % 5 != 0)
for i in range(generate):
    client.emit("generate", 1000.0 + 10 * i, model=sys.argv[4])
client.cache_state("kv-cache", size=128, evictions=3)
"""
EVERY_CHART = ["rate", "error_pct", "p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms", "ttft_p99_ms",
               "quality", "cache_hit_pct", "events"]
WAIT = 60.0  # seconds: generous, for a busy two-core machine

# Each series row as [operation, model (data-), model (text), count (text), count (data-)].
ROWS_JS = """
return Array.from(document.querySelectorAll('#series-table tbody tr[data-operation]')).map(
    row => [row.dataset.operation, row.dataset.model,
            row.querySelector('td[data-field=model]').textContent,
            row.querySelector('td[data-field=count]').textContent,
            row.querySelector('td[data-field=count]').dataset.value]);
"""
# Per chart, how many of its canvas's pixels are opaque and coloured: the series' lines and
# dots (the axes, grid and labels are grey, the background transparent).
COLOURED_JS = """
return Array.from(document.querySelectorAll('#charts .chart')).map(chart => {
  const canvas = chart.querySelector('canvas');
  if (!canvas || !canvas.width || !canvas.height) return [chart.dataset.metric, 0];
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    const spread = Math.max(data[i], data[i + 1], data[i + 2])
                 - Math.min(data[i], data[i + 1], data[i + 2]);
    if (data[i + 3] > 128 && spread > 60) coloured += 1;
  }
  return [chart.dataset.metric, coloured];
});
"""


def emit(namespace: str, chat: int, embed: int, generate: int) -> None:
    run_python(WORKER, namespace, args=[str(chat), str(embed), str(generate), HOSTILE])


def since_start_counts(doc: dict) -> dict[tuple[str, str], int]:
    return {(row["operation"], row["model"]): row["windows"]["since_start"]["count"]
            for row in doc["operations"]}


def expected(chat: int, embed: int, generate: int) -> dict[tuple[str, str], int]:
    return {("chat", "llama-3-8b"): chat, ("embed", "bge-small"): embed,
            ("generate", HOSTILE): generate}


@contextlib.contextmanager
def chromium(tmp_path: Path, width: int, height: int) -> Iterator[WebDriver]:
    """Headless Chromium showing a viewport of exactly width x height (a phone's, with its
    viewport meta honoured, below 600), in light mode, with its network and console logged."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox",  # root in CI: no sandbox then
                     "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--no-default-browser-check", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--window-size={width},{height}",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        color_scheme(driver, "light")
        # What the browser loaded before the page (its start page) is not the page's doing.
        driver.get("about:blank")
        driver.get_log("performance")
        yield driver
    finally:
        driver.quit()


def color_scheme(driver: WebDriver, scheme: str) -> None:
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})


def until(driver: WebDriver, condition: Callable[[], object], what: str,
          seen: Callable[[], object] | None = None) -> object:
    """Wait for ``condition`` to be truthy (its value), polling the page; on a timeout, say
    what ``seen`` returns then."""
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(lambda _: condition())
    except TimeoutException:
        raise AssertionError(f"timed out after {WAIT} s waiting for {what}"
                             + (f"; seen: {seen()}" if seen else "")) from None


def requested(driver: WebDriver) -> list[str]:
    """The URLs the browser asked for since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def errors(driver: WebDriver) -> list[dict]:
    """The console's errors since the last call (a CSP violation, a failed request, an
    exception in app.js)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def coloured(driver: WebDriver) -> dict[str, int]:
    return dict(driver.execute_script(COLOURED_JS))


def charts_drawn(driver: WebDriver) -> bool:
    drawn = coloured(driver)
    return sorted(drawn) == sorted(EVERY_CHART) and all(n >= 10 for n in drawn.values())


def counts_shown(driver: WebDriver) -> dict[tuple[str, str], str]:
    return {(op, model): text for op, model, _, text, _ in driver.execute_script(ROWS_JS)}


def column(driver: WebDriver, field: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll("
        f"'#series-table tbody td[data-field={field}]')).map(td => td.dataset.value);")


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    folder = REPO / "docs" if os.environ.get("AI_ANALYTICS_SCREENSHOTS") else tmp_path
    # Clicking a heading of the phone's table scrolled it sideways: back to its start.
    driver.execute_script("window.scrollTo(0, 0); document.querySelectorAll('.table-wrap')"
                          ".forEach(wrap => { wrap.scrollLeft = 0; });")
    assert driver.get_screenshot_as_file(str(folder / name)), name


@needs_browser
@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)],
                         ids=["1280x800", "390x844"])
def test_the_page_shows_the_known_events_live(tmp_path, namespace, make_config,
                                               daemon_factory, width, height):
    config = make_config(snapshot_interval_seconds=0.5)
    port = read_config(config)["http_port"]
    daemon = daemon_factory(config)
    base = f"http://127.0.0.1:{port}/"
    emit(namespace, *FIRST)
    status_where(port, lambda doc: since_start_counts(doc) == expected(*FIRST),
                 "the first events in /status", timeout=WAIT)

    with chromium(tmp_path, width, height) as driver:
        driver.get(base)
        driver.execute_script("window.notReloaded = true;")

        # Each series with its exact count; the hostile name as its characters.
        want = {key: str(n) for key, n in expected(*FIRST).items()}
        until(driver, lambda: counts_shown(driver) == want, "every series with its count",
              lambda: counts_shown(driver))
        hostile = [row for row in driver.execute_script(ROWS_JS) if row[0] == "generate"]
        assert hostile == [["generate", HOSTILE, HOSTILE, "20", "20"]]
        assert driver.execute_script("return document.querySelectorAll('img').length;") == 0

        # Every chart draws its series (TTFT, quality and cache included: chat has them).
        until(driver, lambda: charts_drawn(driver), "every chart drawn", lambda: coloured(driver))

        # Sorting: by count, descending first; a second click turns it round.
        assert column(driver, "count") == ["40", "30", "20"]
        heading = driver.find_element("css selector", "th[data-sort=count]")
        heading.click()
        until(driver, lambda: column(driver, "count") == ["20", "30", "40"], "ascending sort")
        assert heading.get_attribute("aria-sort") == "ascending"
        driver.find_element("css selector", "th[data-sort=p99_ms]").click()
        until(driver, lambda: driver.execute_script(ROWS_JS)[0][0] == "generate",
              "the slowest series first")

        # The range buttons: one pressed at a time, and the charts redrawn from that range.
        driver.find_element("css selector", "#range button[data-range='5m']").click()
        pressed = "return Array.from(document.querySelectorAll('#range button')).map(" \
                  "b => [b.dataset.range, b.getAttribute('aria-pressed')]);"
        assert dict(driver.execute_script(pressed)) == {
            "5m": "true", "1h": "false", "24h": "false", "7d": "false"}
        until(driver, lambda: charts_drawn(driver), "every chart drawn over 5 minutes",
              lambda: coloured(driver))
        urls = requested(driver)

        def asked(fragment: str) -> bool:
            urls.extend(requested(driver))
            return any(fragment in url for url in urls)

        assert asked("range=5m"), urls

        # Live: more events appear without a reload.
        emit(namespace, MORE_CHAT, 0, 0)
        grown = str(FIRST[0] + MORE_CHAT)
        until(driver, lambda: counts_shown(driver)[("chat", "llama-3-8b")] == grown,
              "the new events in the table")
        assert driver.execute_script("return window.notReloaded === true;")

        screenshot(driver, tmp_path, f"page-{width}x{height}.png")
        if width == 1280:
            color_scheme(driver, "dark")
            until(driver, lambda: driver.execute_script(
                "return getComputedStyle(document.body).backgroundColor;") == "rgb(18, 21, 27)",
                "dark mode")
            until(driver, lambda: charts_drawn(driver), "every chart redrawn in dark colours",
                  lambda: coloured(driver))
            screenshot(driver, tmp_path, f"page-dark-{width}x{height}.png")

        # A row chosen: its series charted alone; chosen again: every series. (Clicked from
        # the page: the table's rows are rebuilt at every poll.)
        click_chat = ("Array.from(document.querySelectorAll('#series-table tbody tr'))"
                      ".find(row => row.dataset.operation === 'chat').click();")
        driver.execute_script(click_chat)
        until(driver, lambda: asked("operation=chat&model=llama-3-8b"), "chat's series alone")
        assert driver.find_element("id", "selection").text.startswith("Charting chat")
        driver.execute_script(click_chat)
        until(driver, lambda: driver.find_element("id", "selection").text == "All series.",
              "every series charted again")

        # Nothing left the daemon's origin, and the console has no error.
        asked(base)
        assert urls and all(url.startswith(base) for url in urls), \
            [url for url in urls if not url.startswith(base)]
        assert errors(driver) == []

        # The daemon stopped: the status line says /status cannot be read.
        assert daemon.stop() == 0
        until(driver, lambda: "cannot read /status" in driver.find_element(
            "id", "status-line").text, "the stopped daemon in the status line")


def test_the_page_files_are_small_and_carry_no_inline_code():
    """Under 200 KB in all; no inline script, style or handler in the HTML (the CSP forbids
    them), and app.js never parses a string as markup."""
    weight = sum(path.stat().st_size for path in PAGE.rglob("*") if path.is_file())
    assert weight < 200 * 1024, weight
    html = (PAGE / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"<style\b|\sstyle=|\son[a-z]+=", html, flags=re.IGNORECASE) == []
    app = (PAGE / "app.js").read_text()
    assert re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", app) == []
