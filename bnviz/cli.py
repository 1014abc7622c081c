"""Command line: ``python -m bnviz train ...`` (headless training), ``data``, ``dashboard`` and ``class``."""

import argparse
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import webbrowser
from pathlib import Path

from bnviz.data.fashion_mnist import DataError, load_fashion_mnist
from bnviz.devices.process_group import GroupFailed, launched_by_torchrun
from bnviz.live import run_folder
from bnviz.live.engine import Experiment
from bnviz.live.experiment_file import metrics_csv, save_experiment
from bnviz.live.run_folder import OutputError, discard_created, prepare_out
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.machine import device as devices
from bnviz.machine import network
from bnviz.step.models import NORMS
from bnviz.studies.exercises import EXERCISES
from bnviz.studies.exercises import run as run_exercise


class TrainingFailed(RuntimeError):
    """The worker stopped with an error; its message is in the experiment's status."""


def parse_norms(text):
    norms = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in norms if n not in NORMS]
    if not norms or bad or len(set(norms)) != len(norms):
        raise argparse.ArgumentTypeError(
            f"--norm takes distinct names from {', '.join(NORMS)}, comma-separated (got {text!r})"
        )
    return norms


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def progress(done, total, text, stream=sys.stderr):
    if not stream.isatty() and done not in (total,):
        return
    width = 30
    filled = int(width * done / max(total, 1))
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text}")
    if done == total:
        stream.write("\n")
    stream.flush()


def train(args):
    """Train the variants side by side through the live engine, printing a table per epoch."""
    if args.out is not None and not str(args.out).strip():  # before any data, process or training
        raise OutputError('--out "" names no folder: give the folder for the run\'s files, or leave --out out')
    if (
        getattr(args, "devices", None) or launched_by_torchrun()
    ):  # data-parallel on K ranks: bnviz/devices/parallel_run.py
        from bnviz.devices.parallel_run import run

        return run(args)
    settings = Settings(
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        train_size=args.train_size,
        classes_per_batch=args.classes_per_batch,
    )
    devices.resolve_device(args.device)  # a clear error before the data is loaded
    specs = [LaneSpec(n, args.activation) for n in args.norm]
    out = Path(args.out) if args.out else None
    created = prepare_out(out) if out else []  # a folder it can write, before any training
    try:
        snap = _train(args, settings, specs, out)
    finally:
        discard_created(created)  # the folders it made for --out, when nothing was saved there: removed
    return snap


def _train(args, settings, specs, out):
    data = load_fashion_mnist()
    if data.notice:  # a folder named by $BNVIZ_DATA (or a partly filled one) was passed over
        print(f"bnviz: {data.notice}", file=sys.stderr)
    with Experiment(data, settings, specs, name="cli", shared_cpu=False) as exp:
        print(
            f"bnviz: training {', '.join(args.norm)} on {devices.describe(exp.device)}, {exp.data.n_train:,} "
            f"images, batch {args.batch_size}, lr {args.lr}, {args.epochs} epoch(s), seed {args.seed}",
            file=sys.stderr,
        )
        printed, last_step = 0, -1
        exp.start()
        while True:
            done = exp.wait(timeout=0.25)
            snap = exp.snapshot()
            total = snap.lanes[0].steps_per_epoch * args.epochs
            if snap.max_step != last_step:
                last_step = snap.max_step
                progress(min(snap.max_step, total), total, f"epoch {max(l.epoch for l in snap.lanes)}/{args.epochs}")
            printed = print_epochs(snap, printed)
            if done:
                break
    if snap.error:
        raise TrainingFailed(f"training stopped: {snap.error}")
    for lane in snap.lanes:
        if lane.status in ("diverged", "error"):
            print(
                f"bnviz: {lane.label}: {lane.status}"
                + (f" at step {lane.diverged_at}" if lane.diverged_at else f" ({lane.error})"),
                file=sys.stderr,
            )
    if out:
        save_outputs(out, exp, snap)
    return snap


def print_epochs(snap, printed):
    """Print the epoch rows that every lane has finished since the last call; return how many are out."""
    epochs = [lane.tables["epochs"] for lane in snap.lanes]
    ready = min(len(e.get("epoch", [])) for e in epochs)
    for i in range(printed, ready):
        if i == 0:
            print(
                f"{'epoch':>5} {'lane':>14} {'train loss':>10} {'train acc':>9} {'val loss':>8} {'val acc':>7} "
                f"{'images/s':>9}"
            )
        for lane, e in zip(snap.lanes, epochs):
            print(
                f"{int(e['epoch'][i]):>5} {lane.label:>14} {e['train_loss'][i]:>10.4f} {e['train_acc'][i]:>9.3f} "
                f"{e['val_loss'][i]:>8.4f} {e['val_acc'][i]:>7.3f} {e['images_per_s'][i]:>9,.0f}",
                flush=True,
            )
    return max(printed, ready)


def lane_summaries(snap):
    """Per lane: its set-up and final numbers; test_acc and test_loss are the last epoch's, on the full 10k test
    set, under the same keys as the multi-device run's summary (bnviz/devices/parallel_run.py)."""
    out = []
    for lane in snap.lanes:
        e = lane.tables["epochs"]
        last = {k: (float(v[-1]) if len(v) else None) for k, v in e.items()}
        out.append(
            dict(
                lane=lane.label,
                norm=lane.spec.norm,
                activation=lane.spec.activation,
                status=lane.status,
                diverged_at=lane.diverged_at,
                epochs=len(e.get("epoch", [])),
                steps=lane.step,
                test_acc=last.get("val_acc"),
                test_loss=last.get("val_loss"),
                train_loss=last.get("train_loss"),
                train_acc=last.get("train_acc"),
                images_per_s=lane.images_per_s,
            )
        )
    return out


OUTPUT_FILES = ("experiment.npz", "history.csv", "summary.json")  # moved in in this order: summary.json last


def output_writers(exp, snap):
    """The dashboard's export format, one writer per file: experiment.npz (loadable for replay), history.csv
    and summary.json (the commit marker, last)."""
    views = [lane.tables for lane in snap.lanes]
    header = exp.header()
    summary_json = json.dumps(
        {"settings": dataclasses.asdict(snap.settings), "device": snap.device, "variants": lane_summaries(snap)},
        indent=2,
    )
    # newline="": the csv module's own line ends (\r\n), as the dashboard's download has them
    csv_text = metrics_csv([l.label for l in snap.lanes], views)
    return {
        "experiment.npz": lambda path: save_experiment(path, header, views),
        "history.csv": lambda path: run_folder.write_text(path, csv_text),
        "summary.json": lambda path: run_folder.write_text(path, summary_json),
    }


def write_outputs(out, exp, snap):
    """The three files into ``out``, all or nothing (``run_folder.write_all``)."""
    run_folder.write_all(out, output_writers(exp, snap))
    print(f"bnviz: wrote {out / 'experiment.npz'}, history.csv and summary.json", file=sys.stderr)


def save_outputs(out, exp, snap):
    """write_outputs into ``out``; when that fails after training, into a new temporary folder, and say where."""
    where = run_folder.save_all(out, output_writers(exp, snap))
    print(f"bnviz: wrote {where / 'experiment.npz'}, history.csv and summary.json", file=sys.stderr)
    return where


def exercise(args):
    """The Exercises view from the terminal: the question, the runs (with a progress bar), the reveal."""
    if args.name == "list":
        for key, e in EXERCISES.items():
            print(f"{key:10} {e.title}: {e.question}")
        return 0
    if args.name not in EXERCISES:
        raise ValueError(f"no exercise called {args.name!r}: choose one of {', '.join(EXERCISES)} (or list)")
    e = EXERCISES[args.name]
    print(f"{e.title} ({e.source})\n{e.question}")
    for i, choice in enumerate(e.choices, 1):
        print(f"  {i}. {choice}")
    data = load_fashion_mnist()
    results = run_exercise(e, data, seed=args.seed, progress=lambda f: progress(int(100 * f), 100, "%"))
    answer, text = e.reveal(results)
    for r in results.values():
        print(f"  {r.name:34} eval {r.val_acc:7.1%}   train mode {r.val_acc_batch:7.1%}   {r.verdict}")
    print(f"The run shows: {e.choices[answer]}\n{text}")
    return 0


DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard.py"


def dashboard(streamlit_args, script=DASHBOARD):
    """`streamlit run dashboard.py` from the checkout, so its .streamlit/config.toml applies; returns its exit code."""
    missing = dashboard_missing(script)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "streamlit", "run", str(script), *streamlit_args]
    return subprocess.call(command, cwd=script.parent)


def dashboard_missing(script):
    """None when the dashboard is there; else the message (it ships with the source checkout, not the package)."""
    if script.is_file():
        return None
    return (
        f"bnviz: the dashboard ({script.name}) is not next to this bnviz package ({script.parent}); it ships "
        "with the source checkout: clone the repository and run `make run` there"
    )


NO_NETWORK = (
    "bnviz class: this laptop has no network address (no Wi-Fi or cable connected?), so no phone can reach it: "
    "serving on this laptop only. Join the class's network and start `bnviz class` again to share."
)
START_S = 60.0  # how long the server may take to answer its health check


def wait_until_up(url, proc, timeout=START_S):
    """Whether the server at ``url`` answers its health check before ``timeout`` (False if it exited)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def classroom(port, open_browser=True, streamlit_args=(), script=DASHBOARD):
    """`bnviz class`: the dashboard on every interface, the teacher's page (with its key) opened on this laptop.

    A fresh teacher's key (128 bits) each time goes to the server in ``BNVIZ_TEACHER_KEY`` (ui/access.py).
    Prints the teacher's URL (this laptop only) and the students' URL (the laptop's network address).
    """
    missing = dashboard_missing(script)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    lan = network.lan_address()
    bind = "0.0.0.0" if lan else "127.0.0.1"
    if not network.port_free(port, bind):
        print(
            f"bnviz class: port {port} is in use (another bnviz?); stop it, or choose another: --port 8502",
            file=sys.stderr,
        )
        return 2
    if lan is None:
        print(NO_NETWORK, file=sys.stderr)
    key = secrets.token_urlsafe(16)
    local = f"http://127.0.0.1:{port}"
    teacher, students = f"{local}/?key={key}", f"http://{lan or '127.0.0.1'}:{port}/"
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", bind]
    command += ["--server.port", str(port), "--server.headless", "true", *streamlit_args]
    proc = subprocess.Popen(command, cwd=script.parent, env={**os.environ, "BNVIZ_TEACHER_KEY": key})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated `bnviz class` ends its server too
    try:
        if not wait_until_up(local, proc):
            print("bnviz class: the server did not start (its messages are above)", file=sys.stderr)
            return proc.poll() or 1
        print(
            f"\nbnviz class: serving on {'every interface' if lan else 'this laptop only'}, port {port}\n"
            f"  Teacher (this laptop only; it holds your key, keep it off the projector): {teacher}\n"
            f"  Students (same network: the QR code is on your page, under Share with the class): {students}\n",
            flush=True,
        )
        if open_browser:
            webbrowser.open(teacher)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bnviz", description="bnviz: see Batch Normalization work.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train LeNet variants side by side, headless")
    t.add_argument(
        "--norm",
        type=parse_norms,
        default=["none", "scratch"],
        help=f"comma-separated normalisations among {', '.join(NORMS)} (default: none,scratch)",
    )
    t.add_argument("--epochs", type=positive(int), default=10)
    t.add_argument("--lr", type=positive(float), default=0.1)
    t.add_argument("--batch-size", type=positive(int), default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--activation", choices=("sigmoid", "relu"), default="sigmoid")
    t.add_argument("--train-size", type=positive(int), default=None, help="train on the first N images only")
    t.add_argument(
        "--classes-per-batch",
        type=positive(int),
        default=10,
        help="each training batch holds images of this many classes (10: i.i.d. batches; 1-5: skewed)",
    )
    t.add_argument("--device", choices=devices.DEVICES, default="auto")
    t.add_argument("--out", default=None, help="folder for experiment.npz (replayable), history.csv and summary.json")
    t.add_argument(
        "--devices", type=positive(int), default=None, help="train data-parallel on K gloo processes, 1/K of each batch"
    )
    t.add_argument(
        "--bn-sync", choices=("device", "global"), default="device", help="with --devices: per-device BN or synced"
    )
    sub.add_parser("data", help="find (or fetch) Fashion-MNIST and check it")
    x = sub.add_parser("exercise", help="run one of the dashboard's exercises and print its reveal (list: all)")
    x.add_argument("name", nargs="?", default="list", help=f"one of {', '.join(EXERCISES)}, or list")
    x.add_argument("--seed", type=int, default=0)
    sub.add_parser(
        "dashboard",
        help="open the dashboard (streamlit run dashboard.py); further options go to streamlit, e.g. --server.port",
    )
    c = sub.add_parser(
        "class",
        help="teach: serve the dashboard on this laptop's network; prints the teacher's and the students' URLs",
    )
    c.add_argument("--port", type=positive(int), default=8501)
    c.add_argument("--no-browser", action="store_true", help="do not open the teacher's page on this laptop")
    args, extra = p.parse_known_args(argv)
    if extra and args.command not in ("dashboard", "class"):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "dashboard":
            return dashboard(extra)
        if args.command == "class":
            return classroom(args.port, not args.no_browser, extra)
        if args.command == "data":
            d = load_fashion_mnist()
            print(
                f"bnviz: Fashion-MNIST ready in {d.source} "
                f"({d.train_images.shape[0]:,} + {d.test_images.shape[0]:,} images, the original files by SHA-256)"
            )
            print(f"bnviz: {d.note}")  # which place was used, and why any earlier one was passed over
        elif args.command == "exercise":
            return exercise(args)
        else:
            train(args)
    except OutputError as e:
        print(f"bnviz: {e}", file=sys.stderr)
        return e.code
    except (DataError, devices.DeviceError, TrainingFailed, ValueError) as e:  # ValueError: settings out of range
        print(f"bnviz: {e}", file=sys.stderr)
        return 2
    except GroupFailed as e:  # --devices: a rank failed, died or hung; every rank was ended
        print(f"bnviz: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # anything else the system refused: a message, never a traceback
        print(f"bnviz: {run_folder.why(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbnviz: interrupted", file=sys.stderr)
        return 130
    return 0
