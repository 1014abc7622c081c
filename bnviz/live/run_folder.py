"""Files written all or nothing: one file (``write_file``), or a run's ``--out`` folder, for the CLI's run and
the data-parallel run.

    created = prepare_out(out)                          # before training: a folder we can write, or OutputError
    write_all(out, {"history.csv": write_csv, ..., "summary.json": write_summary})   # the last is the marker
    where = save_all(out, writers)                      # write_all, or a temporary folder when ``out`` fails

The files are written into a staging folder inside ``out`` (``.bnviz-write-<pid>-...``), then moved in one by
one, the last (summary.json) last, after the previous set was moved aside, its marker first. A folder with the
marker holds a complete set from one run; if anything fails (a full disk, a folder gone), the previous set is
moved back and the error raised, and a run killed while the files move leaves no marker (its previous set is
in the staging folder, which the next run there removes). The staging folder is removed in every other case.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[Path], object]  # writes one file at the path it is given
_OURS = re.compile(r"\.bnviz-(write|probe)-(\d+)-")  # staging folders and probe files, named with their pid


class OutputError(RuntimeError):
    """--out cannot take the run's files: the message says why; ``code`` is the exit status.

    2 when found before training (nothing was trained), 1 when the run trained but its files are elsewhere or
    nowhere (the message says where).
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def why(e: OSError) -> str:
    """An OSError as a few words: 'No space left on device', 'Not a directory: /dev/null'."""
    words = e.strerror or str(e) or type(e).__name__
    return f"{words}: {e.filename}" if e.filename else words


def prepare_out(out: Path) -> list[Path]:
    """Make ``out`` a folder this run can write, before any training: created if missing, probed with a file.

    Removes what runs killed while writing there left behind. Returns the folders it created, for
    ``discard_created``; raises OutputError (exit 2) with what is wrong: a file, no such place, no permission.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder: give a folder for the run's files")
    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=f".bnviz-probe-{os.getpid()}-")
        try:
            os.write(fd, b"bnviz")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        discard_created(created)
        raise OutputError(f"--out {out} is not a folder bnviz can write to ({why(e)}): choose another") from e
    remove_leftovers(out)
    return created


def discard_created(created: list[Path]) -> None:
    """Remove the folders ``prepare_out`` created, deepest first, as long as they are empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def remove_leftovers(out: Path) -> None:
    """Staging folders and probe files of runs that were killed while writing into ``out`` (not of live ones)."""
    try:
        paths = list(out.iterdir())
    except OSError:  # a folder one may write but not list: nothing to tidy that we can see
        return
    for path in paths:
        m = _OURS.match(path.name)
        if not m or int(m[2]) == os.getpid() or _alive(int(m[2])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process
        return True
    return True


def write_text(path: Path, text: str) -> None:
    """``text`` to ``path``, flushed to the disk (newline="": the text's own line ends)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_file(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(binary file)`` on a temporary file beside ``path``, then rename it into place: a reader sees
    the old file or the whole new one, never half of it. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_all(out: Path, writers: Mapping[str, Writer]) -> None:
    """Each ``writers[name](path)`` into a staging folder, then the set moved into ``out`` all or nothing, in
    order: the last name is the commit marker. On any failure ``out`` holds its previous set, untouched."""
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)  # staging folders of writes that were killed: removed at the next write
    stage = Path(tempfile.mkdtemp(dir=out, prefix=f".bnviz-write-{os.getpid()}-"))
    try:
        for name, write in writers.items():
            write(stage / name)
        _swap_in(stage, out, list(writers))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, out: Path, names: list[str]) -> None:
    """Move the staged set into ``out``; on any failure put the previous set back as it was."""
    previous = stage / "previous"
    previous.mkdir()
    moved_aside, moved_in = [], []
    try:
        for name in reversed(names):  # the marker first: the old set is no longer complete
            if (out / name).exists():
                os.replace(out / name, previous / name)
                moved_aside.append(name)
        for name in names:  # the marker last: now the new set is
            os.replace(stage / name, out / name)
            moved_in.append(name)
        _fsync_folder(out)
    except BaseException:
        for name in reversed(names):
            try:
                if name in moved_aside:
                    os.replace(previous / name, out / name)
                elif name in moved_in:
                    (out / name).unlink()  # a new file without the rest of its set
            except OSError:
                pass
        raise


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_all(out: Path, writers: Mapping[str, Writer]) -> Path:
    """``write_all`` into ``out``; when that fails after training, into a new temporary folder: returns where.

    The run is never lost to a full disk or a vanished folder: OutputError (exit 1) names the folder that
    holds it, or says that neither place could take it.
    """
    try:
        write_all(out, writers)
        return out
    except OSError as e:
        first = e
    fallback = None
    try:
        fallback = Path(tempfile.mkdtemp(prefix="bnviz-run-"))
        write_all(fallback, writers)
    except OSError as e:
        if fallback is not None:
            shutil.rmtree(fallback, ignore_errors=True)
        raise OutputError(
            f"the run trained, but could not be saved: not in {out} ({why(first)}), nor in a temporary folder "
            f"({why(e)})",
            code=1,
        ) from e
    raise OutputError(
        f"could not write the run's files to {out} ({why(first)}); they are saved in {fallback} instead "
        f"({', '.join(writers)})",
        code=1,
    ) from first
