"""ui/access.py under AppTest: on a server shared with a class, only the page with the teacher's key commands.

The fixtures are test_dashboard's (random images, everything the page starts tracked and stopped).
"""

import secrets

import pytest
from test_dashboard import Page, owned, synthetic  # noqa: F401 (fixtures)

import bnviz.data.fashion_mnist
from ui import access

KEY = secrets.token_urlsafe(16)


@pytest.fixture
def classroom(owned, monkeypatch, synthetic):  # noqa: F811
    """A server that `bnviz class` started: the teacher's key in its environment."""
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)
    monkeypatch.delenv("BNVIZ_MAX_TRAINING", raising=False)
    monkeypatch.setenv("BNVIZ_TEACHER_KEY", KEY)
    return owned


def controls(page):
    return [b.label for b in page.at.button if b.label in ("Start", "Pause", "Step", "Reset")]


def test_a_stranger_on_a_shared_server_starts_nothing_and_gets_a_notice(classroom):
    stranger = Page(classroom)
    stranger.assert_clean()
    assert controls(stranger) == [] and not stranger.at.sidebar.children
    assert any("shared with a class" in t for t in stranger.texts("info"))
    assert classroom.experiments == []  # nothing made for it: the cap stays the teacher's


@pytest.mark.slow
def test_the_teacher_s_key_gives_control_and_leaves_the_address_bar(classroom):
    teacher = Page(classroom, key=KEY)
    teacher.assert_clean()
    assert set(controls(teacher)) >= {"Start", "Reset"}
    assert "key" not in teacher.at.query_params  # off the projected address bar
    teacher.run()  # the same session stays the teacher's
    assert set(controls(teacher)) >= {"Start", "Reset"}
    run_key = teacher.key
    watch_id = teacher.registry.watch_id(run_key)

    # a student who edits the watch link into ?run=, or even copies the run key off the projector, gets no control
    for run in (watch_id, run_key):
        student = Page(classroom, run_key=run)
        student.assert_clean()
        assert controls(student) == [], run
        assert "run" not in student.at.query_params
        assert any(t == "bnviz · watching a run" for t in student.texts("title"))
    assert len(classroom.experiments) == 1  # the students made none

    wrong = Page(classroom, key=KEY[:-1] + ("A" if KEY[-1] != "A" else "B"))
    assert controls(wrong) == [] and any("not this server's teacher key" in t for t in wrong.texts("warning"))


def test_a_server_on_loopback_only_is_the_laptop_s_own(owned, monkeypatch, synthetic):  # noqa: F811
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)
    monkeypatch.delenv("BNVIZ_TEACHER_KEY", raising=False)
    page = Page(owned)  # make run: 127.0.0.1, no key
    page.assert_clean()
    assert "Start" in controls(page)


def test_keys_are_compared_whole():
    assert access.matches(KEY, KEY)
    assert not access.matches(KEY[:-1], KEY) and not access.matches(None, KEY) and not access.matches("", KEY)
