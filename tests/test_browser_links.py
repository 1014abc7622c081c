"""Lesson links keep their set-up (issue 21, part 5), in chromium against a real server.

Each link is opened in a fresh browser context; the set-up the page then shows (its widgets, the *Running:* line,
the address bar and the share panel's lesson link) is compared with the link's, then the page is reloaded and
compared again. The links cover every lesson parameter, with the values a bound widget used to drop (a lane's BN
off, lr 0.01, batch 2, 1 epoch: each its widget's own default), a lane with BN off and a kind of its own, a third
lane, the chapter preset and presenter mode.
"""

import re
import urllib.parse

import pytest
import test_browser
from test_browser import CHROMIUM, CHROMIUM_ARGS, assert_no_failure, settle, sync_api, wait_until

from bnviz.step.models import NORM_INFO

pytestmark = [pytest.mark.browser, pytest.mark.slow]
server, browser_available = test_browser.server, test_browser.browser_available

LINKS = (
    # lane B's BN off with torch's kind kept; every value its widget's default; presenter mode
    "?bn1=false&impl1=torch&lr=0.01&batch_size=2&epochs=1&seed=0&activation=relu&view=Inside+BN&position=bn3&present=1",
    # the chapter preset, a third lane, A with LayerNorm, skewed batches
    "?preset=chapter&bn0=true&impl0=layernorm&bn2=true&impl2=groupnorm&lr=3&batch_size=512&epochs=7&seed=42"
    "&classes=2&view=BN+state&position=bn2",
    # both lanes off, A's kind named while off, defaults spelled out, presenter mode off
    "?bn0=false&impl0=frozen&bn1=false&view=Gradients&activation=sigmoid&present=false&preset=demo",
)
PRESETS = {"demo": ("Class demo: fast", 0.1, 128, 3), "chapter": ("Chapter defaults", 0.1, 128, 10)}
LABELS = {info.label: norm for norm, info in NORM_INFO.items() if norm != "none"}


def truth(raw: str) -> bool:
    return raw.lower() in ("1", "true", "yes", "on")


def setup_of(query: str) -> dict:
    """The set-up a link's query asks for, each parameter a link leaves out filled with the page's documented
    default (the preset's lr, batch size and epochs; seed 0; 10 classes; sigmoid; Training; bn1; lane A without
    BN, B with ours, C only when named, with torch's)."""
    q = dict(urllib.parse.parse_qsl(query.lstrip("?")))
    name = {v[0]: k for k, v in PRESETS.items()}.get(q.get("preset", "demo"), q.get("preset", "demo"))
    preset, lr, batch, epochs = PRESETS[name]
    count = 3 if "bn2" in q or "impl2" in q else 2
    lanes = tuple(
        (truth(q.get(f"bn{i}", "false" if i == 0 else "true")), q.get(f"impl{i}", "torch" if i == 2 else "scratch"))
        for i in range(count)
    )
    return dict(
        preset=preset,
        lr=float(q.get("lr", lr)),
        batch_size=int(q.get("batch_size", batch)),
        epochs=int(q.get("epochs", epochs)),
        seed=int(q.get("seed", 0)),
        classes=int(q.get("classes", 10)),
        activation=q.get("activation", "sigmoid"),
        view=q.get("view", "Training"),
        position=q.get("position", "bn1"),
        present=truth(q.get("present", "false")),
        lanes=lanes,
    )


def checked(page, group):
    return page.get_by_role("radiogroup", name=group).get_by_role("radio", checked=True).inner_text().strip()


def chosen(page, key) -> str:
    """What a selectbox shows: its text, and the value of its input where the choice is written there."""
    box = page.locator(f".st-key-{key}")
    return box.text_content() + " " + " ".join(i.input_value() for i in box.locator("input").all())


def shown(page, position) -> dict:
    """The set-up as the page's widgets show it (the sidebar opened where presenter mode closed it)."""
    expand = page.locator("[data-testid='stExpandSidebarButton']")
    if expand.count() and expand.is_visible():
        expand.click()
    page.locator(".st-key-bn0 [role='switch']").wait_for()
    running = page.get_by_text(re.compile(r"^Running: batch")).text_content()
    m = re.search(r"batch (\d+) · (\d+) epochs? · lr ([\d.]+) · seed (\d+) .*· (\w+)$", running)
    assert m, running
    lanes = []
    for i in range(3):
        switch = page.locator(f".st-key-bn{i} [role='switch']")
        if switch.count() == 0:
            break
        kind = chosen(page, f"impl{i}")
        (label,) = [label for label in LABELS if label in kind]
        lanes.append((switch.is_checked(), LABELS[label]))
    classes = chosen(page, "classes")
    preset = chosen(page, "preset")
    return dict(
        preset=next((name for name, *_ in PRESETS.values() if name in preset), preset),
        lr=float(m.group(3)),
        batch_size=int(m.group(1)),
        epochs=int(m.group(2)),
        seed=int(m.group(4)),
        classes=int(re.search(r"(\d+) (\(i\.i\.d|of the 10)", classes).group(1)),
        activation=m.group(5),
        view=checked(page, "View"),
        position=checked(page, "BN position") if position else "(not drawn)",
        present=page.locator(".st-key-present [role='switch']").is_checked(),
        lanes=tuple(lanes),
    )


def lesson_link(page) -> str:
    share = page.locator(".st-key-share [role='switch']")
    if not share.is_checked():
        page.locator(".st-key-share label").click(force=True)
    code = page.locator("[data-testid='stCode']").filter(has_not_text="?watch=").last
    code.wait_for(state="attached")
    return wait_until(page, lambda: code.text_content().strip(), "the lesson link")


def address(page) -> str:
    """The address bar's query, without the run's id (what a reload reopens, the run aside)."""
    q = [(k, v) for k, v in urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query) if k != "run"]
    return urllib.parse.urlencode(q)


def compare(page, link, stage):
    want = setup_of(link)
    settle(page, timeout=60_000)
    wait_until(page, lambda: "run=" in page.url, f"{stage}: the run's id in the address")
    assert_no_failure(page, stage)
    position = want["view"] in ("Inside BN", "BN state")
    seen = shown(page, position)
    expected = want | ({} if position else {"position": "(not drawn)"})
    assert seen == expected, f"{stage}: the widgets show {seen}, the link asks for {expected}"
    assert setup_of(address(page)) == want, f"{stage}: the address {page.url} for {link}"
    shared = lesson_link(page)
    assert "run=" not in shared and "watch=" not in shared, shared
    assert setup_of(urllib.parse.urlsplit(shared).query) == want, f"{stage}: the lesson link {shared} for {link}"
    return urllib.parse.urlsplit(shared).query


@pytest.mark.parametrize("link", LINKS)
def test_a_lesson_link_reopens_its_set_up_in_a_fresh_browser_and_after_a_reload(server, link):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(30_000)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/" + link, wait_until="domcontentloaded")
            shared = compare(page, link, "opened")
            page.reload(wait_until="domcontentloaded")
            compare(page, link, "reloaded")
            context.close()
            # the share panel's link, opened in another fresh context, is the same set-up again
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/?" + shared, wait_until="domcontentloaded")
            compare(page, link, "the share panel's link")
            for key, _ in urllib.parse.parse_qsl(shared):  # short: each parameter it holds changes the set-up
                rest = urllib.parse.urlencode([(k, v) for k, v in urllib.parse.parse_qsl(shared) if k != key])
                assert setup_of(rest) != setup_of(shared), f"{key} in {shared} only repeats a default"
            assert errors == []
        finally:
            browser.close()
