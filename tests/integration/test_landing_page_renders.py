"""The landing page as people see it: `splitlink serve` renders `/l` in headless Chromium at a
phone's and a laptop's size, styled under its own CSP, nothing wider than the window (SPEC.md
§6.10). The screenshots are kept in tests/artifacts/ to be looked at."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import png
import pytest
from support import chromium
from support.chromium import measure_layout, require_chromium, screenshot
from support.processes import running_server_process

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "landing-page"
VIEWPORTS = {"phone": (390, 844), "laptop": (1366, 768)}
# The page's background (--bg in server/static/landing.css): an unstyled page would be white.
BACKGROUND = (0xEE, 0xF1, 0xF6)


def _pixels(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    width, height, rows, _ = png.Reader(bytes=path.read_bytes()).asRGB8()
    pixels = [(row[x], row[x + 1], row[x + 2]) for row in rows for x in range(0, 3 * width, 3)]
    return width, height, pixels


@pytest.mark.parametrize("device", sorted(VIEWPORTS))
def test_the_landing_page_renders_styled_and_fits_the_window(tmp_path: Path, device: str) -> None:
    require_chromium()
    width, height = VIEWPORTS[device]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{device}-{width}x{height}.png"
    shot.unlink(missing_ok=True)
    env = {"SPLITLINK_APP_NAME": "Example Notes", "SPLITLINK_APP_LINK_SCHEME": "examplenotes"}
    with running_server_process(tmp_path, workers=1, extra_env=env) as server:
        url = server.url + "/l"
        screenshot(url, width=width, height=height, path=shot, profile=tmp_path / "shot")
        layout = measure_layout(url, width=width, height=height, profile=tmp_path / "layout")

    shot_width, shot_height, pixels = _pixels(shot)
    assert (shot_width, shot_height) == (width, height)
    colours = Counter(pixels)
    assert len(colours) > 50, "the screenshot is nearly blank"
    # The style applied under the served CSP: the page background is the stylesheet's.
    assert pixels[0] == BACKGROUND
    assert colours[BACKGROUND] < 0.9 * width * height, "nothing is drawn on the background"

    assert layout.body_background == "rgb({}, {}, {})".format(*BACKGROUND)
    assert layout.body_font_px >= 16
    assert layout.scroll_width <= layout.client_width == width
    assert layout.widest_element <= width


def test_without_chromium_the_renders_skip_but_fail_where_ci_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(chromium, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium"):
        chromium.require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium"):
        chromium.require_chromium()
