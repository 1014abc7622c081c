"""The words around a chart (ui/layout.py): the headline is the caption's first sentence, whole."""

from ui.layout import first_sentence, rest, sentences


def test_the_headline_is_the_first_sentence_and_numbers_keep_their_points():
    text = (
        "B · BN scratch reached 50% validation accuracy first, at step 30 (epoch 0.3). A · BN off not yet "
        "(now 9.6%). **B** moved 2.5× more."
    )
    assert first_sentence(text) == "B · BN scratch reached 50% validation accuracy first, at step 30 (epoch 0.3)."
    assert sentences(text)[1:] == ["A · BN off not yet (now 9.6%).", "**B** moved 2.5× more."]
    assert rest(text) == "A · BN off not yet (now 9.6%). **B** moved 2.5× more."


def test_a_line_break_ends_a_sentence_and_nothing_gives_nothing():
    assert sentences("At step 40: A 80.0%\nB 12.0%") == ["At step 40: A 80.0%", "B 12.0%"]
    assert first_sentence("") == "" and rest("One sentence only.") == ""
