"""What the page says about the data: the loader's notice under the title, and data errors as text, not maths."""

from streamlit.testing.v1 import AppTest

import bnviz.data.fashion_mnist


def notice_page(notice):  # runs as its own script: imports inside
    import dataclasses

    import bnviz.data.fashion_mnist
    from ui import server

    server.data_notice(dataclasses.replace(bnviz.data.fashion_mnist.random_dataset(20, 10), notice=notice))


def run(notice):
    at = AppTest.from_function(notice_page, args=(notice,)).run()
    assert not at.exception
    return [c.value for c in at.caption]


def test_the_notice_is_shown_as_a_caption_without_maths():
    notice = "$BNVIZ_DATA=/x is empty; used /usr/share/datasets/fashion-mnist (unpacked into ./data)"
    assert run(notice) == [f"Fashion-MNIST: {notice.replace('$', chr(92) + '$')}"]  # \$: not a formula


def test_nothing_is_shown_without_a_notice():
    assert run("") == []
    assert bnviz.data.fashion_mnist.random_dataset(20, 10).notice == ""
