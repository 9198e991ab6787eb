"""The map in a real browser: Debian's chromium + chromedriver, headless, with every other host blocked.

Skips when chromium/chromedriver/selenium are missing, unless CI is set (then it fails: CI must test it).
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from graph_fixtures import HOSTILE_IDS, large_graph, network_graph
from tracer.map import render_map

pytestmark = pytest.mark.browser

# Debian's packages (apt-get install -y chromium chromium-driver); overridable for other systems.
CHROMIUM = os.environ.get("TRACER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TRACER_CHROMEDRIVER", "/usr/bin/chromedriver")


def _missing() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (apt-get install -y chromium chromium-driver)"
    if not (os.path.exists(CHROMEDRIVER) and os.access(CHROMEDRIVER, os.X_OK)):
        return f"{CHROMEDRIVER} not found (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def driver():
    reason = _missing()
    if reason:
        if _in_ci():
            pytest.fail(f"browser test required in CI but {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tracer-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--disable-extensions", "--window-size=1400,900",
                 f"--user-data-dir={profile}",
                 # every host name fails to resolve: nothing can be fetched from the network
                 "--host-resolver-rules=MAP * ~NOTFOUND"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # Service with an explicit path: selenium-manager is never asked to download anything.
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, path: Path, timeout: float = 60.0) -> float:
    driver.get_log("browser")  # drain logs of earlier pages
    driver.get_log("performance")
    start = time.monotonic()
    driver.get(path.resolve().as_uri())
    while time.monotonic() - start < timeout:
        if driver.execute_script("return !!(window.tracerMap && window.tracerMap.ready)"):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"map did not finish drawing within {timeout}s")


def _no_alert(driver):
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _external_requests(driver) -> list[str]:
    import json

    urls = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    # chrome:, chrome-untrusted: (e.g. the new-tab page the driver opens before the map), devtools: and
    # chrome-extension: URLs are the browser's own built-in resources, not network requests
    internal = ("file:", "data:", "about:", "blob:", "chrome:", "chrome-untrusted:", "chrome-extension:", "devtools:")
    return [u for u in urls if not u.startswith(internal)]


def _png_pixels(png: bytes) -> tuple[int, int, int, list[bytes]]:
    """Decode an 8-bit non-interlaced RGB/RGBA PNG (what chromium writes) with the stdlib."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def _canvas_colour_stats(driver) -> tuple[int, float]:
    """Distinct colours and luminance variance of the network area of a screenshot."""
    png = driver.get_screenshot_as_png()
    width, height, bpp, rows = _png_pixels(png)
    rect = driver.execute_script(
        "var r = document.getElementById('mynetwork').getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height, window.devicePixelRatio];")
    left, top, w, h = (int(v * rect[4]) for v in rect[:4])
    colours, lum = set(), []
    for y in range(max(top, 0), min(top + h, height), 3):
        row = rows[y]
        for x in range(max(left, 0), min(left + w, width), 3):
            px = row[x * bpp:x * bpp + 3]
            colours.add(px)
            lum.append(0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2])
    mean = sum(lum) / len(lum)
    return len(colours), sum((v - mean) ** 2 for v in lum) / len(lum)


def _hover_node(driver, node_id, timeout: float = 5.0):
    from selenium.webdriver.common.action_chains import ActionChains

    container = driver.find_element("id", "mynetwork")
    x, y, w, h = driver.execute_script(
        "var net = window.tracerMap.network, id = arguments[0];"
        "net.focus(id, {scale: 1.0, animation: false});"
        "var p = net.canvasToDOM(net.getPositions([id])[id]);"
        "var r = document.getElementById('mynetwork').getBoundingClientRect();"
        "return [p.x, p.y, r.width, r.height];", node_id)
    ActionChains(driver).move_to_element_with_offset(container, 5, 5).perform()
    ActionChains(driver).move_to_element_with_offset(container, int(x - w / 2), int(y - h / 2)).perform()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(
                "var t = document.querySelector('div.vis-tooltip');"
                "return !!t && t.style.visibility !== 'hidden' && t.textContent.length > 0"):
            return
        time.sleep(0.1)
    raise AssertionError(f"no tooltip appeared over node {node_id!r}")


def _counts(driver):
    return driver.execute_script(
        "var m = window.tracerMap; return [m.nodes.length, m.edges.length, m.shown];")


def test_external_requests_are_caught(driver, tmp_path):
    """The check the maps must pass can fail: a page that links a CDN is reported (the request
    fails, every host name is unresolvable here, but it is attempted)."""
    page = tmp_path / "cdn.html"
    page.write_text('<html><head><script src="https://cdn.example.com/vis.js"></script></head><body>x</body></html>')
    driver.get_log("performance")
    driver.get(page.resolve().as_uri())
    assert any(u.startswith("https://cdn.example.com/") for u in _external_requests(driver))


def test_small_map_renders_offline_and_safely(driver, tmp_path):
    graph = network_graph()
    path = render_map(graph, tmp_path / "map.html", title="<script>alert('t')</script> map")
    _open(driver, path)
    n_nodes, n_edges, shown = _counts(driver)
    assert (n_nodes, n_edges) == (graph.number_of_nodes(), graph.number_of_edges())
    assert shown == graph.number_of_nodes()
    assert driver.execute_script("return window.tracerMap.physics") is True
    assert _console_errors(driver) == []
    assert _external_requests(driver) == []
    _no_alert(driver)

    # hostile ids are plain labels in the DataSet and plain text in the page
    labels = driver.execute_script("return window.tracerMap.nodes.get().map(function (n) { return n.label; })")
    for hid in HOSTILE_IDS:
        assert hid in labels
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    assert driver.execute_script("return document.getElementById('tracer-title').textContent") == \
        "<script>alert('t')</script> map"
    # tooltips are DOM elements built with textContent
    tip = driver.execute_script(
        "var n = window.tracerMap.nodes.get(arguments[0]);"
        "return [n.title instanceof Element, n.title.textContent, n.title.querySelectorAll('*').length];",
        HOSTILE_IDS[0])
    assert tip[0] is True and HOSTILE_IDS[0] in tip[1] and "<b>bold</b>" in tip[1]
    assert tip[2] == len(tip[1].split("\n")) or tip[2] >= 5  # only our div lines, no parsed markup
    assert driver.execute_script(
        "var n = window.tracerMap.nodes.get(arguments[0]); return n.title.querySelectorAll('b,script,img').length",
        HOSTILE_IDS[0]) == 0

    # hovering the hostile node shows its tooltip as text
    _hover_node(driver, HOSTILE_IDS[0])
    tooltip = driver.execute_script(
        "var t = document.querySelector('div.vis-tooltip');"
        "return t ? [t.style.visibility, t.textContent, t.querySelectorAll('script,img,b').length] : null;")
    assert tooltip is not None and tooltip[0] != "hidden", tooltip
    assert HOSTILE_IDS[0] in tooltip[1] and "<b>bold</b>" in tooltip[1] and tooltip[2] == 0
    _no_alert(driver)

    # the canvas shows a drawing, not a blank area
    colours, variance = _canvas_colour_stats(driver)
    assert colours > 20 and variance > 20, (colours, variance)

    # filters hide nodes through the DataSet
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "tracer-role")).select_by_value("=upper_tier")
    hidden = driver.execute_script(
        "return window.tracerMap.nodes.get({filter: function (n) { return !n.hidden; }})"
        ".map(function (n) { return n.id; })")
    uppers = sorted(n for n, a in graph.nodes(data=True) if a["role"] == "upper_tier")
    assert sorted(hidden) == uppers
    Select(driver.find_element("id", "tracer-role")).select_by_value("*")
    Select(driver.find_element("id", "tracer-network")).select_by_value("=0")
    visible = driver.execute_script(
        "return window.tracerMap.nodes.get({filter: function (n) { return !n.hidden; }})"
        ".map(function (n) { return n.id; })")
    assert sorted(visible) == sorted(n for n, a in graph.nodes(data=True) if a.get("network_id") == 0)
    driver.find_element("id", "tracer-neighbours").click()
    with_nbrs = driver.execute_script("return window.tracerMap.shown")
    assert with_nbrs > len(visible)
    driver.find_element("id", "tracer-reset").click()
    assert _counts(driver)[2] == graph.number_of_nodes()
    assert _console_errors(driver) == []
    _no_alert(driver)


def test_large_map_static_layout(driver, tmp_path):
    graph = large_graph(1500)
    assert graph.number_of_nodes() > 1000
    path = render_map(graph, tmp_path / "large.html")
    elapsed = _open(driver, path)
    assert elapsed < 20, f"large map took {elapsed:.1f}s to draw"
    n_nodes, n_edges, _ = _counts(driver)
    assert (n_nodes, n_edges) == (graph.number_of_nodes(), graph.number_of_edges())
    assert driver.execute_script("return window.tracerMap.physics") is False
    assert driver.execute_script("return window.tracerMap.network.physics.options.enabled") is False
    # positions are the ones computed in Python and do not move
    sample = sorted(graph.nodes)[:25]
    before = driver.execute_script("return window.tracerMap.network.getPositions(arguments[0])", sample)
    given = driver.execute_script(
        "var ids = arguments[0]; return window.tracerMap.nodes.get(ids).map(function (n) { return [n.x, n.y]; })",
        sample)
    for node, (x, y) in zip(sample, given):
        # getPositions() rounds to whole pixels
        assert abs(before[node]["x"] - x) <= 1 and abs(before[node]["y"] - y) <= 1
    time.sleep(1.0)
    after = driver.execute_script("return window.tracerMap.network.getPositions(arguments[0])", sample)
    assert after == before
    colours, variance = _canvas_colour_stats(driver)
    assert colours > 5 and variance > 1, (colours, variance)
    assert _console_errors(driver) == []
    assert _external_requests(driver) == []


def test_empty_graph_page(driver, tmp_path):
    import networkx as nx

    path = render_map(nx.DiGraph(), tmp_path / "empty.html")
    _open(driver, path)
    assert _counts(driver)[:2] == [0, 0]
    assert "no accounts" in driver.find_element("id", "tracer-empty").text
    assert _console_errors(driver) == []


def test_readme_screenshot(driver, tmp_path):
    """Writes docs/img/map.png (the README's picture) when TRACER_UPDATE_SCREENSHOT is set."""
    if not os.environ.get("TRACER_UPDATE_SCREENSHOT"):
        pytest.skip("set TRACER_UPDATE_SCREENSHOT=1 to refresh docs/img/map.png")
    graph = network_graph(n_networks=2, low_per_net=6, context=6, hostile=False)
    path = render_map(graph, tmp_path / "readme.html", title="tracer network map - demo")
    driver.set_window_size(1400, 900)
    _open(driver, path)
    out = Path(__file__).resolve().parents[1] / "docs" / "img" / "map.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(driver.get_screenshot_as_png())
