"""The map viewer in a real browser: Debian's Chromium, headless, driven by Playwright.

The page must load without console errors, fetch its tiles, draw each quadrant of the test scene in its
class colour (read back from a screenshot), list the classes in the legend, and report the class of a
clicked pixel; a change folder must swipe between its two dates and list its transitions with their
areas. Without Chromium or Playwright these tests skip, saying why; CI sets
TERRABEAM_REQUIRE_BROWSER=1 (`.ci/run` installs Chromium), which turns the skip into a failure.

`TERRABEAM_UPDATE_SCREENSHOTS=1` also writes the README's screenshot (docs/viewer.png) from the demo's
prediction, when `make demo` has made one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pipelines.view import start
from pipelines.view.maps import DEFAULT_PREDICTIONS
from tests.helpers.environment import ROOT
from tests.helpers.viewer_scene import CHANGES, CLASSES, NODATA_ROWS, SIZE

README_SCREENSHOT = ROOT / "docs" / "viewer.png"
CHROMIUM_FLAGS = [
    # As root (CI) Chromium needs --no-sandbox; the rest keep it from calling Google's services, which
    # this closed network refuses (and which a test must not depend on anyway).
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
VIEWPORT = {"width": 1100, "height": 720}
BACKGROUND = (244, 244, 242)  # #map's background, seen where no layer has data


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable(reason: str):
    if os.environ.get("TERRABEAM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TERRABEAM_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install playwright)")
    executable = chromium_path()
    if executable is None:
        unavailable("no Chromium on this machine (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class Page:
    """A page of the viewer with its console messages, failed requests and tile responses recorded."""

    def __init__(self, browser, url: str, first_layer: str = "classes") -> None:
        self.page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.tiles: list[tuple[int, str]] = []
        self.page.on(
            "console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))
        self.page.on("response", self._response)
        self.page.goto(url)
        self.page.wait_for_selector("body[data-state=ready]")
        self.wait_for_tiles(first_layer)

    def _response(self, response) -> None:
        if "/tiles/" in response.url:
            self.tiles.append((response.status, response.url))
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")

    def wait_for_tiles(self, layer: str) -> None:
        self.page.wait_for_selector(f"body[data-{layer}-loaded=true]")

    def set_opacity(self, value: float) -> None:
        self.page.eval_on_selector(
            "#opacity", "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", str(value)
        )

    def position(self, lon: float, lat: float) -> tuple[int, int]:
        """Page pixel (x, y) of a lon/lat."""
        x, y = self.page.evaluate(
            """([lon, lat]) => {
                const p = terrabeam.map.latLngToContainerPoint([lat, lon]);
                const box = terrabeam.map.getContainer().getBoundingClientRect();
                return [box.left + p.x, box.top + p.y];
            }""",
            [lon, lat],
        )
        return round(x), round(y)

    def screenshot(self, path: Path | None = None) -> Image.Image:
        # Leaflet fades new tiles in over 200 ms after their layer reports them loaded.
        self.page.wait_for_timeout(500)
        data = self.page.screenshot(path=str(path) if path else None)
        return Image.open(io.BytesIO(data)).convert("RGB")

    def close(self) -> None:
        self.page.close()


def hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def close_to(actual, expected, tolerance: int = 3) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


@pytest.fixture(scope="module")
def viewer(viewer_prediction):
    _, predictions = viewer_prediction
    with start(str(predictions)) as running:
        yield running


@pytest.fixture
def page(browser, viewer):
    page = Page(browser, viewer.url)
    yield page
    page.close()


def test_page_loads_its_tiles_and_draws_each_class_in_its_colour(page, viewer_prediction, tmp_path):
    scene, _ = viewer_prediction
    page.wait_for_tiles("imagery")
    page.set_opacity(1.0)
    info = page.page.evaluate("terrabeam.info")
    colours = {c["name"]: hex_rgb(c["color"]) for c in info["classes"]}
    assert colours["water"] == (0x41, 0x9B, 0xDF)
    shot = page.screenshot(tmp_path / "viewer.png")
    for name, (lon, lat) in scene.quadrant_centres().items():
        x, y = page.position(lon, lat)
        assert close_to(shot.getpixel((x, y)), colours[name]), (name, shot.getpixel((x, y)))
    # Where there is no data, neither the class map nor the imagery draws anything.
    x, y = page.position(*scene.lonlat(SIZE - NODATA_ROWS / 2, SIZE / 4))
    assert close_to(shot.getpixel((x, y)), BACKGROUND), shot.getpixel((x, y))
    # At half opacity the imagery shows through: the colour lies between the class's and the image's.
    page.set_opacity(0.5)
    page.page.wait_for_timeout(100)
    blended = page.screenshot()
    x, y = page.position(*scene.quadrant_centres()["water"])
    assert not close_to(blended.getpixel((x, y)), colours["water"], 10)
    classes = [t for t in page.tiles if "/tiles/classes/" in t[1]]
    imagery = [t for t in page.tiles if "/tiles/imagery/" in t[1]]
    assert classes and imagery and all(status == 200 for status, _ in page.tiles)
    assert page.errors == [] and page.failed == []


def test_legend_lists_classes_colours_and_area_shares(page):
    items = page.page.locator("#legend li")
    assert items.count() == len(CLASSES)
    assert [items.nth(i).get_attribute("data-class") for i in range(len(CLASSES))] == list(CLASSES)
    valid = SIZE * (SIZE - NODATA_ROWS)
    water = items.nth(0).inner_text()
    assert "water" in water and f"{100 * (SIZE // 2) ** 2 / valid:.1f} %" in water
    swatch = items.nth(0).locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
    assert swatch == "rgb(65, 155, 223)"
    assert page.errors == []


def test_a_click_reports_the_pixels_class_and_probabilities(page, viewer_prediction):
    scene, _ = viewer_prediction
    for name, (lon, lat) in scene.quadrant_centres().items():
        page.page.mouse.click(*page.position(lon, lat))
        page.page.wait_for_selector(f"#pixel-class[data-class={name}]")
        rows = page.page.locator("#pixel-probabilities tr")
        probabilities = {
            rows.nth(i).get_attribute("data-class"): float(rows.nth(i).get_attribute("data-p"))
            for i in range(rows.count())
        }
        assert max(probabilities, key=probabilities.get) == name and probabilities[name] > 0.9
    info = page.page.inner_text("#pixel-info")
    assert "EPSG:32632" in info and "Row, col" in info
    page.page.mouse.click(*page.position(*scene.lonlat(SIZE - 3, 20)))
    page.page.wait_for_selector("#pixel-class[data-class='']")
    assert "no prediction" in page.page.inner_text("#pixel-class")
    assert page.errors == [] and page.failed == []


def test_probability_layer_and_training_data(page, viewer_prediction):
    scene, _ = viewer_prediction
    page.set_opacity(1.0)
    page.page.select_option("#probability", label="trees")
    page.wait_for_tiles("probability")
    shot = page.screenshot()
    trees = shot.getpixel(page.position(*scene.quadrant_centres()["trees"]))
    water = shot.getpixel(page.position(*scene.quadrant_centres()["water"]))
    assert trees[0] > 200 and trees[1] > 200 and water[0] < 90  # viridis: yellow near 1, purple near 0
    assert any("/tiles/probability-1/" in url for _, url in page.tiles)
    page.page.check("#layer-regions")
    page.page.check("#layer-points")
    page.page.wait_for_selector("body[data-points]")
    page.page.wait_for_selector("body[data-regions='1']")
    count = int(page.page.get_attribute("body", "data-points"))
    assert count > 0 and f"({count})" in page.page.inner_text("#points-count")
    assert page.page.locator("path.leaflet-interactive").count() >= 1  # the region's outline
    assert page.errors == [] and page.failed == []


def test_the_demo_prediction_opens_by_default(browser, monkeypatch):
    """With `make demo`'s prediction at hand, no argument opens it; the README's screenshot comes from it."""
    if not (ROOT / DEFAULT_PREDICTIONS / "prediction.json").exists():
        pytest.skip(f"no demo prediction in {DEFAULT_PREDICTIONS} (make demo makes one)")
    monkeypatch.chdir(ROOT)
    with start() as viewer:
        page = Page(browser, viewer.url)
        page.wait_for_tiles("imagery")
        page.page.check("#layer-regions")
        page.page.wait_for_selector("body[data-regions]")
        centre = page.page.evaluate("terrabeam.map.getCenter()")
        page.page.mouse.click(*page.position(centre["lng"], centre["lat"]))
        page.page.wait_for_selector("#pixel-class")
        assert page.page.locator("#legend li").count() == len(page.page.evaluate("terrabeam.info.classes"))
        if os.environ.get("TERRABEAM_UPDATE_SCREENSHOTS") == "1":
            README_SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(README_SCREENSHOT)
        assert page.errors == [] and page.failed == []
        page.close()


def test_the_legend_shows_estimated_areas_with_their_intervals(browser, assessed_prediction):
    with start(str(assessed_prediction)) as running:
        page = Page(browser, running.url)
        try:
            items = page.page.locator("#legend li")
            page.page.wait_for_selector("#legend li")
            water = items.nth(0).inner_text()
            assert "water" in water and " ha ± " in water, water
            note = page.page.inner_text("#legend-note")
            assert "95 %" in note and "reference points" in note and "overall accuracy" in note, note
            assert page.errors == []
        finally:
            page.close()


def test_a_change_swipes_between_its_dates_and_lists_the_transitions(
    browser, viewer_prediction, viewer_change
):
    """The second date is drawn right of the divider only: dragged or set, the divider moves the clip of
    the second date's pane, and the screenshot shows each date on its side of it."""
    scene, _ = viewer_prediction
    doc = json.loads((viewer_change / "change.json").read_text())
    with start(str(viewer_change)) as running:
        page = Page(browser, running.url, first_layer="before-classes")
        try:
            page.wait_for_tiles("after-classes")
            page.set_opacity(1.0)
            colours = {c["name"]: hex_rgb(c["color"]) for c in page.page.evaluate("terrabeam.info.classes")}
            clip = "terrabeam.map.getPane('after').style.clipPath"
            _, _, rows, cols = CHANGES[0]  # water (2019) -> trees (2023)
            centre = page.position(*scene.lonlat((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2))
            divider = page.page.locator("#swipe-divider")
            box = divider.bounding_box()
            x0 = box["x"] + box["width"] / 2
            assert centre[0] < x0  # the block starts left of the divider: 2019 there
            first = page.page.evaluate(clip)
            assert first.startswith("polygon(")
            assert close_to(page.screenshot().getpixel(centre), colours["water"])
            # Drag the divider to the left of the block: 2023 (trees) shows there.
            page.page.mouse.move(x0, box["y"] + box["height"] / 2)
            page.page.mouse.down()
            page.page.mouse.move(centre[0] - 40, box["y"] + box["height"] / 2, steps=5)
            page.page.mouse.up()
            dragged = page.page.evaluate(clip)
            assert dragged != first
            assert float(page.page.input_value("#swipe")) < 50
            assert close_to(page.screenshot().getpixel(centre), colours["trees"])
            # The range input sets it too: at the right edge the whole map is 2019's.
            page.page.eval_on_selector(
                "#swipe", "e => { e.value = 100; e.dispatchEvent(new Event('input')); }"
            )
            assert page.page.evaluate(clip) not in (first, dragged)
            assert close_to(page.screenshot().getpixel(centre), colours["water"])
            # The legend: each transition with its colour, name and change.json's area.
            items = page.page.locator("#legend li")
            names = [t["transition"] for t in doc["top_transitions"]]
            assert [items.nth(i).get_attribute("data-class") for i in range(items.count())] == [
                "unchanged",
                *names,
            ]
            water_to_trees = items.nth(1)
            assert (
                float(water_to_trees.get_attribute("data-hectares")) == doc["top_transitions"][0]["hectares"]
            )
            assert water_to_trees.inner_text().split() == ["water", "→", "trees", "81.9", "ha"]
            swatch = water_to_trees.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
            assert swatch == "rgb({}, {}, {})".format(*colours["trees"])
            assert "154 ha changed" in page.page.inner_text("#legend-note")
            # A click: both dates' classes and the transition.
            page.page.mouse.click(*centre)
            page.page.wait_for_selector("#pixel-transition[data-transition=water_to_trees]")
            assert page.page.get_attribute("#pixel-dates tr[data-date=before]", "data-class") == "water"
            assert page.page.get_attribute("#pixel-dates tr[data-date=after]", "data-class") == "trees"
            # Side by side: a second map, at the same place.
            page.page.check("#mode-side")
            page.wait_for_tiles("after-classes-2")
            assert page.page.is_visible("#map-after") and not page.page.is_visible("#swipe-divider")
            assert page.page.evaluate(clip) == ""
            centres = page.page.evaluate("[terrabeam.map.getCenter(), terrabeam.second.getCenter()]")
            assert centres[0] == pytest.approx(centres[1])
            assert page.errors == [] and page.failed == []
        finally:
            page.close()
