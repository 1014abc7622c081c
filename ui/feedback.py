"""Commands from the page, and failures shown as messages: never a traceback in front of a class."""

import contextlib

import streamlit as st

from bnviz.live.engine import describe_error
from bnviz.live.experiment_file import RecordingError
from bnviz.live.registry import CapacityError
from bnviz.machine.device import DeviceError

from .state import flash

MARKDOWN = "\\`*_{}[]()<>#!|~$"  # inline: what can make a link, an image, emphasis, HTML or maths


def plain(text):
    """User-supplied text (a file's name, a header field) shown as itself, never as Markdown or HTML:
    a name like ``[x](http://host)`` must not become a link, nor ``![](...)`` an image that fetches."""
    return "".join("\\" + c if c in MARKDOWN else c for c in str(text))


EXPECTED = (ValueError, DeviceError, RecordingError, RuntimeError, TimeoutError)


def say(fn, *args, **kwargs):
    """Run a command; show what went wrong as a message on the next drawing of the page."""
    try:
        return fn(*args, **kwargs)
    except CapacityError as e:
        flash("warning", str(e))
    except EXPECTED as e:
        flash("error", describe_error(e) if isinstance(e, RuntimeError) else str(e))
    return None


@contextlib.contextmanager
def guard():
    """Show a failure inside a part of the page as a message, not a traceback."""
    try:
        yield
    except Exception as e:
        st.error(f"This view could not be drawn: {describe_error(e)}")
