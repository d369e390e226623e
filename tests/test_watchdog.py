"""No orphans: a flow's process killed with SIGKILL leaves no Prefect server nor any other child behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import watchdog

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the watchdog reads /proc")


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _alive(pid: int) -> bool:
    stat = watchdog._stat(pid)
    return stat is not None and (Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0)


def _children_named(parent: int, word: str) -> list[int]:
    found = []
    for pid in watchdog.descendants(parent):
        try:
            if word in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(pid)
        except OSError:
            continue
    return found


def test_a_killed_process_takes_its_children_with_it():
    code = (
        "import subprocess, sys, time\n"
        "from flows.watchdog import guard_this_process\n"
        "guard_this_process()\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(2 * watchdog.POLL_SECONDS + 0.5)  # the watchdog has noted the child
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait(lambda: not _alive(child), watchdog.GRACE_SECONDS + 5), "the child outlived its killed parent"


def test_an_unrelated_process_that_reused_nothing_is_left_alone():
    """Only what the dead process started goes: a process outside its tree stays."""
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        code = "from flows.watchdog import guard_this_process; import time; guard_this_process(); time.sleep(2)"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
        time.sleep(2 * watchdog.POLL_SECONDS + 0.5)
        assert bystander.poll() is None
    finally:
        bystander.kill()


@pytest.mark.integration
def test_a_flow_killed_with_sigkill_leaves_no_prefect_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    code = f"from flows.train_embeddings import train_embeddings; train_embeddings(data_dir={str(tmp_path / 'd')!r})"
    run = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        started = _wait(lambda: _children_named(run.pid, "flows.watchdog") and _children_named(run.pid, "uvicorn"), 180)
        assert started, "the flow did not start its server and watchdog"
        servers = _children_named(run.pid, "uvicorn")
        time.sleep(2 * watchdog.POLL_SECONDS + 0.5)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert _wait(lambda: not any(_alive(pid) for pid in servers), watchdog.GRACE_SECONDS + 10), "orphan server"
