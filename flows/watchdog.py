"""No orphans: when a flow's process dies, however it dies, the processes it started end too.

A flow run from the CLI or from Python starts Prefect's temporary API server as a child process (uvicorn),
and training may start torchrun's workers. Prefect stops its server at exit, but a SIGKILL (the OOM killer,
``kill -9``, a container's hard stop) skips every exit handler, and the server lives on, holding its port
and its database. ``guard_this_process`` starts one small watchdog process beside the flow's, in a session
of its own: it notes the flow process's descendants every half second, and when that process is gone it
sends each one it noted (and that is still the same process: same start time) SIGTERM, then SIGKILL.

Linux only (it reads ``/proc``); elsewhere it does nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")
POLL_SECONDS = 0.5
GRACE_SECONDS = 5.0
_started: dict[int, subprocess.Popen] = {}  # per process: one watchdog (the pid keys it across forks)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, None when it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])  # fields 4 and 22 of proc(5), after "pid (comm)"


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid → start time."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[1]
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found and pid in starts:
            found[pid] = starts[pid]
            todo += children.get(pid, [])
    return found


def _end(noted: dict[int, int]) -> None:
    """SIGTERM each noted process that is still the one noted, then SIGKILL what is left after the grace."""
    alive = {pid for pid, start in noted.items() if (stat := _stat(pid)) is not None and stat[1] == start}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + GRACE_SECONDS
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            alive = {pid for pid in alive if (stat := _stat(pid)) is not None and stat[1] == noted[pid]}
            if not alive:
                return
            time.sleep(0.1)


def watch(parent: int, parent_start: int) -> None:
    """The watchdog's loop: note ``parent``'s descendants while it lives, end them once it is gone."""
    me = os.getpid()
    noted: dict[int, int] = {}
    while (stat := _stat(parent)) is not None and stat[1] == parent_start:
        noted.update({pid: start for pid, start in descendants(parent).items() if pid != me})
        time.sleep(POLL_SECONDS)
    _end(noted)


def guard_this_process() -> subprocess.Popen | None:
    """Start this process's watchdog (once); None where there is no /proc."""
    pid = os.getpid()
    stat = _stat(pid)
    if stat is None:
        return None
    if pid not in _started or _started[pid].poll() is not None:
        _started[pid] = subprocess.Popen(
            [sys.executable, "-m", "flows.watchdog", str(pid), str(stat[1])],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the flow's process group: a Ctrl-C or a group kill spares it
        )
    return _started[pid]


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]))
