"""Start, Pause, Step and Reset, and the status bar that says what is running."""

import time

import streamlit as st

from bnviz.live.lane_events import latest as latest_event

from .feedback import say
from .state import MAX_URL_EPOCHS, Key


def await_step(exp, before, timeout=0.6):
    """Right after Start, give training a moment to take a step, so the redraw already shows it."""
    end = time.monotonic() + timeout
    while exp.status == "running" and time.monotonic() < end:
        if exp.snapshot().max_step > before:
            return
        time.sleep(0.03)


def on_start(exp, registry, key):
    before = exp.snapshot().max_step
    say(registry.start, key)
    await_step(exp, before)


def on_step(exp):
    say(exp.step, 1)
    say(exp.wait, 5)


SHORTCUTS = {"Start": "Space", "Pause": "Space", "Step": "S", "Reset": "X"}  # R is Streamlit's own (rerun)

# Streamlit's shortcuts stay silent while an input has the focus, and a mouse click leaves the focus on what it
# clicked: after a click on a toggle (*Share with the class*), Space toggled it again instead of starting, and on a
# button Space pressed that button. So a mouse click (``detail`` > 0; a key's click has 0, and a keyboard user keeps
# the focus) on anything but a text field hands the focus back to the page; a choice picked from a select's list
# does too. Installed once per tab.
KEEP_SHORTCUTS_JS = """<script>
if (!window.bnvizKeepShortcuts) {
  window.bnvizKeepShortcuts = true;
  const TEXT = new Set(["text", "number", "search", "email", "password", "url", "tel"]);
  document.addEventListener("click", (e) => {
    if (e.detail === 0) return;
    const picked = !!(e.target.closest && e.target.closest('[role="option"]'));
    setTimeout(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return;
      const typing = el.isContentEditable || el.tagName === "TEXTAREA" ||
        (el.tagName === "INPUT" && TEXT.has(el.type) && !(picked && el.getAttribute("role") === "combobox"));
      if (!typing && el.getAttribute("role") !== "slider") el.blur();  // a slider keeps its arrow keys
    }, 0);
  }, true);
}
</script>"""


def keep_shortcuts(where):
    """Space, S and X (and the view keys) work whatever was clicked last (``KEEP_SHORTCUTS_JS``); nothing shown."""
    where.html(KEEP_SHORTCUTS_JS, width="content", unsafe_allow_javascript=True)


MORE_EPOCHS = 1


def on_more_epochs(exp, registry, key):
    epochs = say(exp.extend, MORE_EPOCHS)
    if epochs is not None:
        # the set-up form follows what runs now: no "Not running yet: epochs 3 (running: 4)" note, and Reset (which
        # keeps the running settings) agrees with the form
        st.session_state[Key.EPOCHS] = epochs
        on_start(exp, registry, key)


NOT_RESPONDING = (
    "The training process is not responding (it may be stopped or overloaded): the charts show what it last sent. "
    "Press Reset to start a new one."
)
ONLY_RESET = "The training process cannot take commands: press Reset (X)"


def can_command(exp):
    """Whether the experiment can take Start, Pause or Step: its process runs and answers (asks nothing)."""
    return exp.status not in ("error", "stopped") and getattr(exp, "responding", True)


def render(exp, registry, key):
    """The four buttons in one row, each as wide as its label; Space starts and pauses, S steps, X resets.

    On a finished run Start and Step cannot act: they are disabled, and the row offers more epochs instead.
    When the training process has died or does not answer, only Reset can act.
    """
    ok = can_command(exp)
    running = exp.status == "running" and ok
    finished = exp.status == "finished"
    row = st.container(horizontal=True, gap="small", vertical_alignment="center")
    row.button(
        "Start",
        icon=":material/play_arrow:",
        type="primary",
        help=ONLY_RESET
        if not ok
        else "Finished: Reset, or train more epochs"
        if finished
        else "Start or resume training (Space)",
        disabled=running or finished or not ok,
        shortcut=None if running or finished or not ok else SHORTCUTS["Start"],
        on_click=on_start,
        args=(exp, registry, key),
    )
    row.button(
        "Pause",
        icon=":material/pause:",
        help="Pause training (Space)",
        disabled=not running,
        shortcut=SHORTCUTS["Pause"] if running else None,
        on_click=say,
        args=(exp.pause,),
    )
    row.button(
        "Step",
        icon=":material/skip_next:",
        help=ONLY_RESET
        if not ok
        else "Finished: Reset, or train more epochs"
        if finished
        else "One step of every lane, then pause (S)",
        disabled=finished or not ok,
        shortcut=None if finished or not ok else SHORTCUTS["Step"],
        on_click=on_step,
        args=(exp,),
    )
    row.button(
        "Reset",
        icon=":material/restart_alt:",
        help="Every lane back to step 0, same seed (X)",
        shortcut=SHORTCUTS["Reset"],
        on_click=say,
        args=(exp.reset,),
    )
    keep_shortcuts(row)
    if finished and ok:
        room = exp.settings.epochs + MORE_EPOCHS <= MAX_URL_EPOCHS
        row.button(
            f"Train {MORE_EPOCHS} more epoch",
            icon=":material/add:",
            help="Every lane goes on from where it stopped; nothing restarts"
            if room
            else f"A run trains at most {MAX_URL_EPOCHS} epochs: Reset to start again",
            disabled=not room,
            on_click=on_more_epochs,
            args=(exp, registry, key),
        )
        n = exp.settings.epochs
        row.caption(f"Finished {n} epoch{'s' if n != 1 else ''}: Reset to start again, or train more.")


def divergence_rule(settings):
    """The engine's rule for a diverged lane, in words, from the run's own settings."""
    return (
        f"its loss became NaN or infinite, or stayed above {settings.diverge_loss:g} for {settings.diverge_steps} "
        "steps in a row; chance level is 2.3"
    )


def run_state(snap):
    """The experiment's state in one word, true for every lane: 'finished' when no lane has steps left."""
    if (
        snap.status in ("idle", "paused", "running")
        and snap.lanes
        and all(l.status in ("finished", "diverged", "error") for l in snap.lanes)
    ):
        return "finished"
    return str(snap.status)


def lane_progress(lane, epochs):
    total = lane.steps_per_epoch * epochs
    text = f"{lane.label.split(' · ')[0]}: step {lane.step:,}/{total:,}"
    notes = [str(lane.status)] if lane.status not in ("training", "ready") else []
    event = latest_event(lane.tables, lane.diverged_at)
    if event is not None:
        notes.append(event.short())
    if notes:
        text += f" ({'; '.join(notes)})"
    return text, min(1.0, lane.step / max(total, 1))


def status_text(snap, state=None):
    """What the status bar says: the device, the state, the speed while training, and every lane's step;
    ``state``: what to say instead of the run's own state (a replay says whether it plays)."""
    state = state or run_state(snap)
    parts = [str(snap.device), state if snap.responding else f"not responding (last seen {state})"]
    if state == "running":
        ips = sum(l.images_per_s for l in snap.lanes if l.status == "training")
        parts.append(f"{ips:,.0f} images/s")
    epoch = max((l.epoch for l in snap.lanes), default=1)
    parts.append(f"epoch {epoch}/{snap.settings.epochs}")
    parts += [lane_progress(l, snap.settings.epochs)[0] for l in snap.lanes]
    return " · ".join(parts)


def status_bar(snap, commands=True, state=None):
    """The progress of every lane and what went wrong; ``commands``: this page has the buttons (a viewer's
    page and a replay do not, so they do not tell their reader to press Reset); ``state``: see status_text."""
    fractions = [lane_progress(l, snap.settings.epochs)[1] for l in snap.lanes] or [0.0]
    st.progress(sum(fractions) / len(fractions), text=status_text(snap, state))
    for lane in snap.lanes:
        if lane.status == "diverged":
            st.warning(
                f"{lane.label} diverged at step {lane.diverged_at:,} ({divergence_rule(snap.settings)}) and "
                "stopped; the other lanes go on. Try a smaller learning rate, or turn BN on."
            )
        elif lane.status == "error":
            st.error(f"{lane.label} stopped: {lane.error}")
    if snap.error:
        said = str(snap.error).rstrip(". ")  # a dead training process's message already says what to press
        if not commands:
            said = said.replace("Press Reset to start it again", "The teacher's page can reset it")
            st.error(f"Training stopped: {said}.")
        else:
            st.error(f"Training stopped: {said}." + ("" if "Reset" in said else " Press Reset to start again."))
    elif not snap.responding:
        st.warning(
            NOT_RESPONDING if commands else NOT_RESPONDING.replace("Press Reset", "The teacher's page can reset")
        )
