"""The projector screen: each view's first chart lies wholly in the first screen (issue 21, parts 1 and 2).

Measured as the element's bounding rectangle in chromium, not from a picture: at 1280×800 (a classroom
projector) and 1920×1080, in normal and in presenter mode (``?present=1``), for Training, Inside BN, BN state,
Gradients, a study's result in Experiments and the shipped replay; and the watch page on a phone (390×844),
where no text may be under 12 px and the eight view buttons must fit the screen's width.
"""

import re

import pytest
import test_browser
from test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    assert_no_failure,
    button_starting,
    control,
    pick_study,
    progress_step,
    settle,
    show_view,
    sync_api,
    wait_until,
    watch_link,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# the browser suite's fixtures, by name: a Streamlit server on a free port, the screenshots' folder, chromium's check
server, shots, browser_available = test_browser.server, test_browser.shots, test_browser.browser_available

SCREENS = ((1280, 800), (1920, 1080))
VIEWS_WITH_CHARTS = ("Training", "Inside BN", "BN state", "Gradients")

# The first chart of the main area (Plotly's element, or a viewer's SVG), with the boxes of what must stand above
# it: the status bar and, on a page with controls, the Reset button. Boxes are in CSS pixels of the viewport,
# as the page opened (scrolled to the top).
FIRST_CHART_JS = r"""() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const chart = main.querySelector('[data-testid="stPlotlyChart"], svg[data-chart]');
  const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
                      return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
  const reset = [...main.querySelectorAll('button')].find(b => b.innerText.split(/\s+/).includes('Reset'));
  return {chart: box(chart), status: box(main.querySelector('[data-testid="stProgress"]')), reset: box(reset),
          scrollY: window.scrollY};
}"""


def first_chart(page):
    """The boxes once the status bar is drawn and the first chart has its traces (Plotly) or curves (SVG)."""

    def drawn():
        ready = page.evaluate(
            """() => { const main = document.querySelector('[data-testid="stMain"]');
              const p = main.querySelector('.js-plotly-plot'); const s = main.querySelector('svg[data-chart]');
              const status = main.querySelector('[data-testid="stProgress"]');
              const drawn = (p && p.data && p.data.length) || (s && s.querySelector('g[data-trace]'));
              return Boolean(status && drawn); }"""
        )
        return page.evaluate(FIRST_CHART_JS) if ready else None

    return wait_until(page, drawn, "the view's first chart", timeout=60)


def assert_in_first_screen(boxes, height, what, controls=True):
    chart = boxes["chart"]
    assert boxes["scrollY"] == 0, what
    assert chart["top"] >= 0 and chart["bottom"] <= height, f"{what}: the first chart spans {chart}, screen {height}"
    assert boxes["status"] is not None and boxes["status"]["bottom"] <= chart["top"], f"{what}: status {boxes}"
    if controls:
        assert boxes["reset"] is not None and boxes["reset"]["bottom"] <= chart["top"], f"{what}: controls {boxes}"


def open_page(browser, url, size):
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(30_000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="domcontentloaded")
    settle(page, timeout=60_000)
    return page, errors


def run_id(page):
    return re.search(r"[?&]run=([^&]+)", page.url).group(1)


def test_every_views_first_chart_lies_in_the_first_screen(server, shots):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            # a run with every table filled: 80 steps of the class demo, then paused
            page, errors = open_page(browser, server, SCREENS[0])
            start = control(page, "Start")
            start.click()
            wait_until(page, lambda: (progress_step(page) or 0) >= 80, "80 steps of training", timeout=120)
            control(page, "Pause").click()
            wait_until(page, start.is_enabled, "the pause")
            settle(page)
            key = run_id(page)
            # a study's result: batch against running statistics, kept by the server for this run
            show_view(page, "Experiments")
            pick_study(page, "Batch vs running statistics")
            button_starting(page, "Test ").click()
            page.get_by_text("Batch statistics against running statistics").first.wait_for(timeout=120_000)
            settle(page)
            page.close()
            assert not errors, errors

            for size in SCREENS:
                for present in (False, True):
                    mode = "presenter" if present else "normal"
                    url = f"{server}/?run={key}" + ("&present=1" if present else "")
                    page, errors = open_page(browser, url, size)
                    for view in (*VIEWS_WITH_CHARTS, "Experiments"):
                        if view != "Training":
                            show_view(page, view)
                        if view == "Experiments":
                            pick_study(page, "Batch vs running statistics")
                        page.evaluate("() => window.scrollTo(0, 0)")
                        boxes = first_chart(page)
                        assert_no_failure(page, f"{view} at {size}, {mode}")
                        assert_in_first_screen(boxes, size[1], f"{view} at {size[0]}×{size[1]}, {mode}")
                        if size == SCREENS[0] and present:  # the normal views: tests/test_browser.py's pictures
                            page.mouse.move(size[0] - 5, size[1] - 5)
                            page.screenshot(path=str(shots / f"presenter-{view.lower().replace(' ', '-')}.png"))
                    page.close()
                    assert not errors, errors

                    # the shipped recording, replayed
                    page, errors = open_page(
                        browser, f"{server}/?replay=chapter" + ("&present=1" if present else ""), size
                    )
                    page.get_by_text("Replay of").first.wait_for()
                    boxes = first_chart(page)
                    assert_in_first_screen(boxes, size[1], f"the replay at {size}, {mode}", controls=False)
                    page.close()
                    assert not errors, errors
        finally:
            browser.close()


# Every text on the page with its size in CSS pixels as drawn: an SVG text's font size times the SVG's scale.
TEXT_SIZES_JS = """() => {
  const out = [];
  const main = document.querySelector('[data-testid="stMain"]');
  for (const el of main.querySelectorAll('*')) {
    if (!el.getClientRects().length) continue;
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    let size = parseFloat(getComputedStyle(el).fontSize);
    const svg = el.closest('svg');
    if (svg && svg.viewBox.baseVal && svg.viewBox.baseVal.width) {
      size = parseFloat(el.getAttribute('font-size') || size) * svg.getBoundingClientRect().width
             / svg.viewBox.baseVal.width;
    }
    out.push({text: el.textContent.trim().slice(0, 40), size: size});
  }
  return out;
}"""

VIEW_BUTTONS_JS = """() => [...document.querySelectorAll('[data-testid="stMain"] [role="radiogroup"] [role="radio"]')]
  .map(b => { const r = b.getBoundingClientRect(); return {name: b.innerText.trim(), left: r.left, right: r.right}; })
"""


def test_the_watch_page_on_a_phone(server, shots):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page, errors = open_page(browser, server, SCREENS[0])
            control(page, "Start").click()
            wait_until(page, lambda: (progress_step(page) or 0) >= 30, "30 steps of training", timeout=120)
            control(page, "Pause").click()
            settle(page)
            watching = watch_link(page).rsplit("=", 1)[1]  # the share panel's watch id, not the run's key

            phone, phone_errors = open_page(browser, f"{server}/?watch={watching}", (390, 844))
            boxes = first_chart(phone)
            phone.screenshot(path=str(shots / "viewer-phone.png"))
            assert_in_first_screen(boxes, 844, "the watch page at 390×844", controls=False)
            assert boxes["chart"]["right"] <= 390, boxes
            small = [t for t in phone.evaluate(TEXT_SIZES_JS) if t["size"] < 12]
            assert small == [], small
            buttons = phone.evaluate(VIEW_BUTTONS_JS)
            assert len(buttons) == 8, buttons
            assert all(b["left"] >= 0 and b["right"] <= 390 for b in buttons), buttons
            assert_no_failure(phone, "the watch page on a phone")
            assert not phone_errors, phone_errors
            assert not errors, errors
        finally:
            browser.close()
