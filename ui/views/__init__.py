"""One module per view, each with ``render(snapshot, context)`` and its captions as constants beside it.

Each module names itself (``NAME``); ``VIEWS`` is the one table of views, which the page's view picker, the
router, a lesson link's check (``ui.state``) and the tests all read.
"""

from bnviz.live.snapshot import Snapshot

from ..context import ViewContext
from . import bn_state, exercises, experiments, gradients, inside_bn, lesson, story, training

MODULES = (training, inside_bn, bn_state, gradients, experiments, lesson, story, exercises)  # the picker's order
VIEWS = {view.NAME: view.render for view in MODULES}
DEFAULT_VIEW = "Training"


def render(name: str | None, snap: Snapshot, ctx: ViewContext) -> None:
    VIEWS.get(name or DEFAULT_VIEW, VIEWS[DEFAULT_VIEW])(snap, ctx)
