"""The class on the network, in a real browser: a server started as `bnviz class` starts it (a teacher's key in its
environment), on 127.0.0.1 only. Every student is a fresh browser context (no cookie); the teacher's page opens
with ``?key=``. Traffic stays on 127.0.0.1, so loopback proves nothing here: only the key makes a teacher.
"""

import io
import os
import re
import secrets
import zipfile

import pytest
from PIL import Image
from test_browser import (  # noqa: F401 (browser_available: the skip when chromium is missing)
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    assert_no_failure,
    browser_available,
    control,
    data_env,
    free_port,
    read,
    run_id,
    serve_dashboard,
    settle,
    show_view,
    sync_api,
    wait_until,
    watch_link,
)

from ui.share import BIG_QR_PX, qr_png

pytestmark = [pytest.mark.browser, pytest.mark.slow]
KEY = secrets.token_urlsafe(16)
COMMANDS = ("Start", "Pause", "Step", "Reset", "Apply and restart", "Train 1 more epoch")


@pytest.fixture
def classroom(request, tmp_path):
    """The dashboard as `bnviz class` serves it (BNVIZ_TEACHER_KEY), bound to 127.0.0.1 for the test."""
    port = free_port()
    env = {**os.environ, "BNVIZ_TEACHER_KEY": KEY, "BNVIZ_GRACE_S": "30", **data_env(request)}
    env.pop("BNVIZ_MAX_TRAINING", None)
    yield from serve_dashboard(env, port, tmp_path / "server.log")


def new_page(browser, width=1280, height=800):
    """A page in a browser context of its own: its own cookies, as a different person's browser."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(30_000)
    return page


def commands_on(page):
    return [label for label in COMMANDS if control(page, label).count()]


def teacher_page(browser, url):
    page = new_page(browser)
    page.goto(f"{url}/?key={KEY}", wait_until="domcontentloaded")
    settle(page, timeout=60_000)
    control(page, "Start").wait_for()
    return page


def test_a_student_cannot_take_over_the_teacher_s_run(classroom):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            teacher = teacher_page(browser, classroom)
            assert "key=" not in teacher.url  # off the projected address bar
            run_key = run_id(teacher)
            control(teacher, "Start").click()
            watch_id = watch_link(teacher).rsplit("=", 1)[1]
            progress = teacher.locator("[data-testid='stProgress']").first

            def step():
                m = re.search(r"step ([\d,]+)", progress.inner_text())
                return int(m.group(1).replace(",", "")) if m else 0

            wait_until(teacher, lambda: step() >= 5, "the teacher's run to train")

            # the watch link edited into ?run=, the run key read off the projector, a stranger's root page
            for path in (f"/?run={watch_id}", f"/?run={run_key}", "/"):
                student = new_page(browser)
                student.goto(classroom + path, wait_until="domcontentloaded")
                settle(student, timeout=60_000)
                student.get_by_role("heading", name="bnviz · watching a run").wait_for()
                student.locator("svg[data-chart='Training loss per step']").wait_for()  # the teacher's run
                assert commands_on(student) == [], (path, commands_on(student))
                assert student.get_by_role("switch").count() == 0, path
                assert "run=" not in student.url, path
                assert_no_failure(student, path)
                student.close()

            # the teacher's run went on, untouched, and a reload (the cookie) is still the teacher's page
            before = step()
            wait_until(teacher, lambda: step() > before, "the teacher's run to go on")
            teacher.reload(wait_until="domcontentloaded")
            settle(teacher, timeout=60_000)
            control(teacher, "Pause").wait_for()
            assert run_id(teacher) == run_key
            assert_no_failure(teacher, "the teacher's page after a reload")
        finally:
            browser.close()


def pixels(png: bytes) -> tuple:
    """An image's size and pixels, however it was encoded (the QR code's payload is in its pixels)."""
    with Image.open(io.BytesIO(png)) as im:
        gray = im.convert("L")
        return gray.size, gray.tobytes()


def texts_in(data: bytes, name: str) -> str:
    """A download as text; an .npz (a zip) member by member, decompressed."""
    if name.endswith(".npz"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return "".join(z.read(m).decode("latin-1") for m in z.namelist())
    return data.decode("utf-8", "replace")


def test_nothing_a_student_sees_holds_a_key(classroom):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            teacher = teacher_page(browser, classroom)
            run_key = run_id(teacher)
            secret = (KEY, run_key)
            seen = {}  # what a student can see, by where it comes from
            control(teacher, "Step").click()
            settle(teacher)
            link = watch_link(teacher)
            seen["watch link"] = link
            panel = teacher.locator("[data-testid='stSidebar']")
            seen["lesson link"] = panel.locator("[data-testid='stCode']").filter(has_not_text="?watch=").inner_text()
            # the QR codes: the small one and Show the QR's big one, each exactly the watch link's code
            big_switch = teacher.get_by_role("switch", name="Show the QR")
            teacher.locator("label", has=big_switch).click()
            big = teacher.locator(".st-key-big-qr img")
            big.wait_for()
            assert big.bounding_box()["width"] >= 300
            for image in (panel.locator("img").first, big):
                png = teacher.request.get(image.evaluate("img => img.src")).body()  # the address, resolved
                assert pixels(png) in (pixels(qr_png(link)[0]), pixels(qr_png(link, BIG_QR_PX)[0]))
            seen["big QR caption"] = teacher.locator(".st-key-big-qr").inner_text()
            # every export a teacher might hand out
            teacher.get_by_text("Export · load a run").click()
            labels = ("Metrics (CSV)", "Class predictions (CSV)", "Metrics and probes (JSON)")
            for label in labels + ("Whole experiment (replayable)",):
                with teacher.expect_download() as download:
                    teacher.get_by_role("button", name=label).click()
                path = download.value.path()
                seen[label] = texts_in(open(path, "rb").read(), download.value.suggested_filename)
            with teacher.expect_download() as download:
                teacher.get_by_role("button", name="Save as a web page").click()
            seen["web page"] = open(download.value.path(), encoding="utf-8").read()
            # the watch page as a student's browser has it, and the root page a stranger gets
            for path in ("/?watch=" + link.rsplit("=", 1)[1], "/"):
                student = new_page(browser, 390, 844)
                student.goto(classroom + path, wait_until="domcontentloaded")
                settle(student, timeout=60_000)
                student.locator("svg[data-chart='Training loss per step']").wait_for()
                seen[f"student page {path}"] = student.content() + student.url
                seen[f"student cookies {path}"] = repr(student.context.cookies())
                student.close()
            assert len(seen) == 12, list(seen)  # 3 texts, 5 downloads, 2 pages and their cookies
            leaks = [(where, which) for where, text in seen.items() for which in secret if which in text]
            assert not leaks, leaks
        finally:
            browser.close()


def font_px(locator) -> float:
    return locator.evaluate("el => parseFloat(getComputedStyle(el).fontSize)")


def test_a_phone_s_vote_reaches_the_teacher_s_tally_and_a_reload_is_not_a_second_vote(classroom):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            teacher = teacher_page(browser, classroom)
            watch_id = watch_link(teacher).rsplit("=", 1)[1]
            show_view(teacher, "Story")
            teacher.get_by_role("button", name="Ask the class").click()
            tally = teacher.locator(".st-key-tally-story-0")
            tally.wait_for()
            assert "0 votes" in tally.inner_text()

            phone = new_page(browser, 390, 844)
            phone.goto(f"{classroom}/?watch={watch_id}", wait_until="domcontentloaded")
            settle(phone, timeout=60_000)
            question = phone.locator(".st-key-class-question")
            question.get_by_text("Which lane will reach 50% validation accuracy first?").wait_for()
            choices = question.get_by_role("button")
            choices.last.wait_for()  # the text and the buttons may reach the page in separate deltas
            wait_until(phone, lambda: choices.count() == 3, "the three choices")
            assert choices.all_inner_texts() == ["A, without BN", "B, with BN", "they will be level"]
            for b in choices.all():  # sized for a phone: full width, readable
                assert b.bounding_box()["width"] >= 0.8 * 390, b.bounding_box()
                assert font_px(b.locator("p")) >= 12
            assert font_px(question.locator("p").first) >= 12

            question.get_by_role("button", name="B, with BN").click()
            question.get_by_text("Your vote: B, with BN").wait_for()
            wait_until(phone, lambda: tally_says(tally, "1 vote", "B, with BN: 1 (100%)"), "the vote on the tally")
            wait_until(
                phone,
                lambda: any(c["name"] == "bnviz_voter" for c in phone.context.cookies()),
                "the voter id in the phone's cookie",
            )

            # a reload is a new session of the same browser: the same voter, its vote shown, no second vote
            phone.reload(wait_until="domcontentloaded")
            settle(phone, timeout=60_000)
            question.get_by_text("Your vote: B, with BN").wait_for()
            question.get_by_role("button", name="A, without BN").click()  # a changed mind, after the reload
            question.get_by_text("Your vote: A, without BN").wait_for()
            wait_until(phone, lambda: tally_says(tally, "1 vote", "A, without BN: 1 (100%)"), "the changed vote")
            assert "B, with BN: 0 (0%)" in tally.inner_text()
            assert_no_failure(phone, "the phone's watch page")
            assert_no_failure(teacher, "the teacher's page")
        finally:
            browser.close()


def tally_says(tally, *texts) -> bool:
    text = tally.inner_text()
    return all(t in text for t in texts) and "2 votes" not in text
