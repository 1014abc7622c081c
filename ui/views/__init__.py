"""One module per view, each with ``render(snapshot, context)`` and its captions as constants beside it.

``VIEWS`` is the table the page's view picker, the router and the tests all read.
"""

from . import bn_state, exercises, experiments, gradients, inside_bn, lesson, story, training

VIEWS = {
    "Training": training.render,
    "Inside BN": inside_bn.render,
    "BN state": bn_state.render,
    "Gradients": gradients.render,
    "Experiments": experiments.render,
    "Lesson": lesson.render,
    "Story": story.render,
    "Exercises": exercises.render,
}
DEFAULT_VIEW = "Training"


def render(name, snap, ctx):
    VIEWS.get(name or DEFAULT_VIEW, VIEWS[DEFAULT_VIEW])(snap, ctx)
