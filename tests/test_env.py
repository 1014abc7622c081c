"""bnviz/machine/env.py: a setting from the environment is used when valid; otherwise its default, said once."""

from bnviz.machine import env


def test_the_landscape_cadence_reads_the_environment_and_refuses_nonsense(monkeypatch, capsys):
    monkeypatch.delenv("BNVIZ_LANDSCAPE_EVERY", raising=False)
    monkeypatch.setattr(env, "_warned", set())  # said once per process: this test is the first to see it
    assert env.landscape_every() == 25  # the study's default
    monkeypatch.setenv("BNVIZ_LANDSCAPE_EVERY", "10")
    assert env.landscape_every() == 10
    for bad in ("0", "-5", "often"):
        monkeypatch.setenv("BNVIZ_LANDSCAPE_EVERY", bad)
        assert env.landscape_every() == 25
    assert "BNVIZ_LANDSCAPE_EVERY" in capsys.readouterr().err
    assert "BNVIZ_LANDSCAPE_EVERY" in env.VARIABLES
