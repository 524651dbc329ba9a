"""The command line of ``scripts/monitor_training.py``: one snapshot (``--once``, text or ``--json``), a live
dashboard redrawn every ``--refresh`` seconds, the tail of the text log (``--tail``) and the PNG (``--plot``).

Exit status with ``--once``: 0 = running, waiting or finished; 1 = no such folder; 2 = looks stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from qwenvl.flare.runfiles import RUN_FILE, TRAIN_LOG_JSONL, TRAIN_LOG_TEXT
from qwenvl.tools.monitor.plot import write_plot
from qwenvl.tools.monitor.render import format_snapshot
from qwenvl.tools.monitor.runfolder import tail_lines
from qwenvl.tools.monitor.snapshot import DEFAULT_WINDOW, Snapshot, take_snapshot
from qwenvl.tools.monitor.states import CRASHED, MISSING
from qwenvl.tools.monitor.system import system_stats

DEFAULT_REFRESH_S = 10.0

EXIT_OK = 0
EXIT_MISSING = 1
EXIT_CRASHED = 2


def print_tail(
    output_dir: Path, n: int, log_name: str = TRAIN_LOG_TEXT, out: Callable[[str], None] = print
) -> int:
    """Print the last ``n`` lines of the run's text log; exit status 1 when there is none."""
    path = output_dir / log_name
    if not path.is_file():
        others = sorted(p.name for p in output_dir.glob("*.log")) if output_dir.is_dir() else []
        hint = f" Other logs there: {', '.join(others)} (choose one with --log_file)." if others else ""
        where = "does not exist" if not output_dir.is_dir() else f"has no {log_name} yet"
        out(f"{output_dir} {where}.{hint}")
        return EXIT_MISSING
    lines = tail_lines(path, n)
    out(f"==> last {len(lines)} line(s) of {path} <==")
    for line in lines:
        out(line)
    return EXIT_OK


def _exit_status(snap: Snapshot) -> int:
    return {MISSING: EXIT_MISSING, CRASHED: EXIT_CRASHED}.get(snap.state, EXIT_OK)


def _plot(output_dir: Path, plot: Path | None, window: int) -> str | None:
    if plot is None:
        return None
    written = write_plot(output_dir, plot, window)
    return f"📈 Plot written to {written}" if written else f"📈 No plot yet ({plot}): no logged step"


def snapshot_once(
    output_dir: Path,
    window: int = DEFAULT_WINDOW,
    plot: Path | None = None,
    as_json: bool = False,
    pid_check: bool = True,
    out: Callable[[str], None] = print,
) -> int:
    """Print one snapshot (text or JSON); write the plot when asked. Exit status: 0, 1 (no folder), 2 (looks stopped)."""
    snap = take_snapshot(output_dir, window=window, pid_check=pid_check)
    if snap.state == MISSING:
        snap.message += " Check --output_dir, or start training first."
    if as_json:
        out(snap.to_json())
    else:
        out(format_snapshot(snap, system_stats()))
    note = _plot(output_dir, plot, window) if snap.state != MISSING else None
    if note:
        out(note)
    return _exit_status(snap)


def _render(output_dir: Path, refresh: float, window: int, plot: Path | None, pid_check: bool) -> str:
    snap = take_snapshot(output_dir, window=window, pid_check=pid_check)
    if snap.state == MISSING:
        snap.message += f" Waiting for it to appear (checking every {refresh:g} s)."
    text = format_snapshot(snap, system_stats())
    note = _plot(output_dir, plot, window) if snap.state != MISSING else None
    footer = f"refreshing every {refresh:g} s - Ctrl-C to quit (training is not affected)"
    return "\n".join(filter(None, [text, note, footer]))


def watch(
    output_dir: Path,
    refresh: float,
    window: int = DEFAULT_WINDOW,
    plot: Path | None = None,
    pid_check: bool = True,
) -> int:
    """Redraw the snapshot every ``refresh`` seconds until Ctrl-C (in place on a terminal, appended otherwise)."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    try:
        if console.is_terminal:
            with Live(console=console, auto_refresh=False, vertical_overflow="visible") as live:
                while True:
                    live.update(Text(_render(output_dir, refresh, window, plot, pid_check)), refresh=True)
                    time.sleep(refresh)
        while True:
            print(_render(output_dir, refresh, window, plot, pid_check), flush=True)
            time.sleep(refresh)
    except KeyboardInterrupt:
        print("\nMonitor stopped (Ctrl-C); the training run is not affected.")
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/monitor_training.py``."""
    p = argparse.ArgumentParser(
        prog="monitor_training.py",
        description="Watch a training run: progress, ETA, loss, learning rate, GPUs, state (running / finished / looks stopped).",
        epilog="Exit status with --once: 0 = running, waiting or finished; 1 = no such folder; 2 = looks stopped (crashed or hung).",
    )
    p.add_argument(
        "--output_dir",
        type=Path,
        required=True,
        help=f"The run's --output_dir (holds {RUN_FILE}, {TRAIN_LOG_JSONL}, {TRAIN_LOG_TEXT}).",
    )
    p.add_argument(
        "--refresh",
        type=float,
        default=DEFAULT_REFRESH_S,
        help=f"Seconds between redraws (default {DEFAULT_REFRESH_S:g}).",
    )
    p.add_argument(
        "--tail",
        type=int,
        default=None,
        metavar="N",
        help=f"Print the last N lines of {TRAIN_LOG_TEXT} and exit (with --once: after the snapshot).",
    )
    p.add_argument(
        "--log_file",
        default=TRAIN_LOG_TEXT,
        help=f"Log file in the run folder for --tail (default {TRAIN_LOG_TEXT}).",
    )
    p.add_argument("--once", action="store_true", help="Print one snapshot and exit (for scripts and tests).")
    p.add_argument("--json", action="store_true", help="With --once: print the snapshot as JSON.")
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="Write a PNG of loss, learning rate and grad norm over steps (rewritten at every refresh).",
    )
    p.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help=f"Logged steps in the loss moving average and the step-time median (default {DEFAULT_WINDOW}).",
    )
    p.add_argument(
        "--no_pid_check",
        action="store_true",
        help="Do not judge liveness by the training pid (monitoring from another machine or container).",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/monitor_training.py``."""
    args = build_parser().parse_args(argv)
    if args.refresh <= 0 or args.window <= 0:
        print("error: --refresh and --window must be positive", file=sys.stderr)
        return 2
    pid_check = not args.no_pid_check
    if args.once:
        status = snapshot_once(args.output_dir, args.window, args.plot, args.json, pid_check)
        if args.tail:
            tail_status = print_tail(args.output_dir, args.tail, args.log_file)
            status = status or tail_status
        return status
    if args.tail is not None:
        return print_tail(args.output_dir, args.tail, args.log_file)
    return watch(args.output_dir, args.refresh, args.window, args.plot, pid_check)
