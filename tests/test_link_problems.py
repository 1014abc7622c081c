"""Every URL parameter the page reads either works or is named in one line (issue 24): ``state.link_problems``,
the check behind the page's "This link's ... could not be used" warning (tests/test_dashboard.py shows it)."""

import pytest

from ui.state import link_problems
from ui.views import VIEWS

VIEW_NAMES = tuple(VIEWS)


def problems(**params):
    return link_problems({k: v if isinstance(v, list) else [v] for k, v in params.items()}, VIEW_NAMES)


def test_a_link_of_good_values_has_no_problem():
    good = dict(
        lr="1.0",
        batch_size="64",
        epochs="7",
        seed="3",
        classes="2",
        activation="relu",
        view="Training",
        position="bn2",
        preset="chapter",
        present="1",
        bn0="true",
        impl0="torch",
        exercise="small",
        replay="chapter",
        run="abc",
        watch="abc",
        embed="true",
    )
    assert problems(**good) == []


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("replay", "../../etc/passwd", "replay='../../etc/passwd' (it must be chapter"),
        ("replay", ["chapter", "chapter"], "replay given 2 times (give it once)"),
        ("lr", ["0.1", "1.0"], "lr given 2 times"),
        ("device", "bogus", "device='bogus' (the device is chosen in the sidebar, not by a link)"),
        ("train_size", "-1", "train_size='-1' (the training-set size is chosen in the sidebar"),
        ("story_step", "9", "story_step='9' (not a setting a link can hold)"),
        ("exercise", "nope", "exercise='nope' (it must be one of bias, "),
        ("epochs", "101", "epochs='101' (it must be a whole number from 1 to 100)"),
        ("impl1", "batchnorm", "impl1='batchnorm' (it must be"),
        ("present", "maybe", "present='maybe' (it must be true or false)"),
    ],
)
def test_each_value_the_page_cannot_use_is_named_in_one_phrase(key, value, words):
    (said,) = problems(**{key: value})
    assert said.startswith(words) and "\n" not in said, said


def test_a_long_or_odd_name_is_cut_and_quoted():
    (said,) = problems(**{"x" * 500: "<script>" * 50})
    assert len(said) < 150 and said.startswith("x" * 40 + "=")
