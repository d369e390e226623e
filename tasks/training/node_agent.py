"""What runs on a training node's Dask worker: its torchrun agent, in a session of its own, watched until it exits,
the flow sets the stop event, or the task is let go (the flow is gone)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile

POLL_SECONDS = 1.0  # how often the flow looks at the nodes, and each node at its agent and the stop signal
TAIL_CHARS = 3000  # of each failed node's torchrun output, in the error
IFNAME_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")  # the interface gloo and NCCL talk over


def free_port() -> int:
    """On the first node: a port free there now, for the rendezvous its agent serves."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def run_agent(args: list[str], host: str, stop_name: str) -> dict:
    """On a node's worker: its torchrun agent, in a session of its own, until it exits, the flow sets the stop
    event, or this task is let go (the flow is gone); then nothing of it is left. Its exit code and output tail."""
    from distributed import Event

    stop, stopped = Event(stop_name), False
    env = os.environ | {name: iface for name in IFNAME_VARS if name not in os.environ and (iface := _interface(host))}
    with tempfile.TemporaryFile() as output:
        command = [sys.executable, "-m", "torch.distributed.run", *args]
        agent = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)  # fmt: skip
        try:
            while agent.poll() is None:
                if stop.wait(POLL_SECONDS) or _released():
                    stopped = True
                    _end_group(agent)
        finally:
            _end_group(agent)
        output.seek(0)
        tail = output.read().decode(errors="replace")[-TAIL_CHARS:]
    return {"code": agent.returncode, "stopped": stopped, "tail": tail}


def _interface(host: str) -> str | None:
    """The network interface holding ``host``'s address (``lo`` for 127.0.0.1)."""
    import psutil

    with contextlib.suppress(OSError):
        address = socket.gethostbyname(host)
        return next((name for name, addrs in psutil.net_if_addrs().items() if any(a.address == address for a in addrs)),
                    None)  # fmt: skip
    return None


def _released() -> bool:
    """This task was let go: the flow that submitted it is gone, and its agent must not train on alone."""
    from distributed import get_worker
    from distributed.worker import thread_state

    with contextlib.suppress(Exception):  # the worker's internals: a change there loses only this safety net
        task = get_worker().state.tasks.get(thread_state.key)
        return task is None or task.state in ("cancelled", "released", "forgotten")
    return False


def _end_group(agent: subprocess.Popen) -> None:
    """The agent and its training processes: SIGTERM, then SIGKILL what is left after a grace."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(agent.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.wait(grace)
