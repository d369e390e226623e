"""One training at a time on a GPU machine: a Prefect global concurrency slot per machine, and a lock file under it.

Two runs training on one GPU at once would each size their batches for the whole GPU and run out of memory,
so the training stage holds the machine's slot, ``train-embeddings-gpu-<machine>`` (limit 1), while it trains;
the data stages, evaluation and a training served from the store never ask for it. Worker machines are not
known when deploying, so a run creates its machine's limit when it is missing (``make deploy`` and ``make
worker`` set them up beforehand, so they show in the UI), then takes it strictly: a limit that vanished fails
the run instead of letting it train unguarded.

Prefect keeps a slot's lease in the server's memory unless told otherwise, and a server restarted while a
training holds the slot then never gives it back (the limit stays full). ``make server`` therefore stores
leases on disk (``LEASE_STORAGE``); renewals that fail do not stop the training (a warning), and a holder
that died lets go when its lease runs out (``LEASE_SECONDS``). Only a server that outlives the run holds
slots: with no API URL (``make run``'s temporary server, whose leases die with it while its database stays)
the slot is not used. Under the slot, and outside Prefect too, an flock on ``gpu-<machine>.lock`` in the
local cache (``TRAIN_EMBEDDINGS_CACHE``) serializes every training on the machine that shares that cache
directory, whatever server it reports to; the kernel releases it when its holder dies.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import datetime as dt
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tasks.store import locks, remote

log = logging.getLogger(__name__)

PREFIX = "train-embeddings-gpu-"
LIMIT = 1  # trainings at once per machine
MACHINE_ENV = "TRAIN_EMBEDDINGS_MACHINE"  # the machine's name when the hostname is not it (containers)
SLOT_ENV = "TRAIN_EMBEDDINGS_GPU_SLOT"  # auto (on a GPU), on (every device), off (e.g. Kubernetes' own GPU plugin)
LEASE_SECONDS = 300.0  # a holder that died lets go after this (the server's minimum is 60)
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"  # what `make server` sets
WAIT_NOTES = (2.0, 60.0, 300.0)  # pauses before each "still waiting" line: soon, then every 5 minutes


def machine_name() -> str:
    """This machine as slot names say it: ``TRAIN_EMBEDDINGS_MACHINE``, else the hostname."""
    name = os.environ.get(MACHINE_ENV) or socket.gethostname()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "localhost"


def slot_name(machine: str | None = None) -> str:
    """The global concurrency limit that admits one training at a time on ``machine`` (default: this one)."""
    return PREFIX + (machine or machine_name())


def wanted(device: str) -> bool:
    """Whether a training on ``device`` (``cpu``, ``cuda (<name>)``) takes the slot: on a GPU unless turned off."""
    setting = os.environ.get(SLOT_ENV, "auto").strip().lower()
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"{SLOT_ENV}={setting!r}: give auto, on or off")
    return setting == "on" or (setting == "auto" and not device.startswith("cpu"))


def lock_file(machine: str | None = None) -> Path:
    return remote.cache_folder() / f"gpu-{machine or machine_name()}.lock"


def _note(message: str, *args: object) -> None:
    """In the run's log when there is a run, else this module's."""
    try:
        from prefect import get_run_logger

        get_run_logger().info(message, *args)
    except Exception:  # noqa: BLE001 -- outside a run there is no run logger
        log.info(message, *args)


def _server_run() -> tuple[object, str] | None:
    """The task (or flow) run holding a slot, and its kind, when this is a Prefect run on a lasting server."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return None  # a temporary server: its leases die with this process, its database does not
    if (task := TaskRunContext.get()) is not None:
        return task.task_run.id, "task_run"
    if (flow := FlowRunContext.get()) is not None and flow.flow_run is not None:
        return flow.flow_run.id, "flow_run"
    return None


def ensure_limit(name: str, limit: int = LIMIT, reset: bool = False) -> None:
    """Create the limit when missing; ``reset``: also set an existing one back to ``limit`` and active."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        except ObjectAlreadyExists:
            if reset:
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))


def _still_waiting(name: str, since: float) -> None:
    _note("waiting for the GPU slot %s (%.0f s so far): another run trains on this machine. If none does, the "
          "slot leaked (a Prefect server restarted while it kept leases in memory): `prefect gcl update %s "
          "--active-slots 0`, and run the server as `make server` does",
          name, time.monotonic() - since, name)  # fmt: skip


@contextlib.contextmanager
def _noting_the_wait(name: str) -> Iterator[None]:
    """While the body waits for the slot, a line in the run's log now and then (from a thread that sees the run)."""
    done, started = threading.Event(), time.monotonic()

    def note() -> None:
        for pause in itertools.chain(WAIT_NOTES, itertools.repeat(WAIT_NOTES[-1])):
            if done.wait(pause):
                return
            _still_waiting(name, started)

    threading.Thread(target=contextvars.copy_context().run, args=(note,), daemon=True).start()
    try:
        yield
    finally:
        done.set()


@contextlib.contextmanager
def _prefect_slot(name: str, holder_id: object, kind: str) -> Iterator[None]:
    """Hold one slot of the limit ``name`` (created when missing), waiting as long as it takes."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency

    ensure_limit(name)
    holder = ConcurrencyLeaseHolder(type=kind, id=holder_id)
    slot = concurrency(name, strict=True, holder=holder, lease_duration=LEASE_SECONDS,
                       raise_on_lease_renewal_failure=False)  # fmt: skip
    with contextlib.ExitStack() as held:
        with _noting_the_wait(name):
            held.enter_context(slot)
        _note("holding the GPU slot %s", name)
        yield


@contextlib.contextmanager
def _machine_lock(path: Path, who: dict) -> Iterator[None]:
    """The machine's training lock (an flock: its holder dying lets go), with who holds it written in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    announced = False
    while (handle := locks.try_lock(path)) is None:
        if not announced:
            _note("waiting for %s: another training on this machine holds it (%s)", path, locks.lock_holder(path))
            announced = True
        time.sleep(locks.LOCK_POLL_SECONDS)
    with locks.signed(handle, path, who):
        yield


@contextlib.contextmanager
def training_slot(device: str, machine: str | None = None) -> Iterator[None]:
    """Around a training on ``device``: this machine's slot on the Prefect server (in a run that has one),
    then its lock file; nothing at all for a CPU training (``wanted``)."""
    if not wanted(device):
        yield
        return
    machine = machine or machine_name()
    run = _server_run()
    who = {"pid": os.getpid(), "host": socket.gethostname(), "since": dt.datetime.now(dt.UTC).isoformat(),
           "run": None if run is None else str(run[0])}  # fmt: skip
    with contextlib.ExitStack() as held:
        if run is not None:
            held.enter_context(_prefect_slot(slot_name(machine), *run))
        held.enter_context(_machine_lock(lock_file(machine), who))
        yield


def main(argv: list[str] | None = None) -> None:
    """``python -m tasks.training.gpu_slot [MACHINE ...]``: set up each machine's limit (default: this one)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("machines", nargs="*", help="worker machines' names (hostnames); default: this machine")
    parser.add_argument("--if-missing", action="store_true", help="leave an existing limit as it is")
    args = parser.parse_args(argv)
    for machine in args.machines or [machine_name()]:
        ensure_limit(slot_name(machine), reset=not args.if_missing)
        print(f"global concurrency limit {slot_name(machine)}: {LIMIT} training at a time")


if __name__ == "__main__":
    main()
