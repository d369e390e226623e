"""One training at a time per GPU machine: the machine's lock file, and its slot on a real Prefect server
(started as `make server` starts it), held by real flow runs in separate processes; data stages never wait.
The server is restarted while a run holds the slot: with leases on disk the slot comes back, with Prefect's
default (in memory) it leaks, which is why `make server` stores them on disk."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.training import gpu_slot
from tests import prefect_stack as stack

PROJECT = Path(__file__).resolve().parent.parent
MACHINE = "test-box"
MEMORY = "prefect.server.concurrency.lease_storage.memory"

HOLDER = """
import sys, time
from pathlib import Path
from prefect import flow, task
from tasks.training import gpu_slot

name, folder = sys.argv[1], Path(sys.argv[2])

@task
def train():
    with gpu_slot.training_slot("cuda (stand-in)"):
        (folder / f"{name}-in").write_text(repr(time.time()))
        while not (folder / f"{name}-go").exists():
            time.sleep(0.05)
        (folder / f"{name}-out").write_text(repr(time.time()))

@flow(name=f"holder-{name}")
def holder():
    train()

holder()
"""

DATA_STAGES = """
import sys
from prefect import flow
from tasks import stages

@flow
def data(source: str, data_dir: str):
    raw = stages.load_pairs(source, 100, data_dir)
    return stages.map_labels(raw, "mnr", data_dir).rows

print("pairs:", data(sys.argv[1], sys.argv[2]))
"""


def _make_server_storage() -> str:
    """The lease storage `make server` gives the server."""
    recipe = (PROJECT / "Makefile").read_text().split("\nserver:", 1)[1].split("\n\n", 1)[0]
    return re.search(r"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=(\S+)", recipe).group(1)


class Server:
    """A real Prefect server on loopback that a test may restart with another lease storage (same database)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = stack.stack_env(tmp, stack.free_port(), PROJECT)
        self.env["PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS"] = "1"  # waiters retry soon
        self.proc: subprocess.Popen | None = None

    def start(self, lease_storage: str) -> None:
        env = self.env | {"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": lease_storage}
        port = self.env["PREFECT_SERVER_API_PORT"]
        self.proc = stack.start(["server", "start", "--host", "127.0.0.1", "--port", port], env,
                                self.tmp / "server.log")  # fmt: skip
        stack.wait_healthy(self.env["PREFECT_API_URL"], self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stack.stop(self.proc)
            self.proc = None

    def limit(self, name: str):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def read():
            async with get_client() as client:
                return await client.read_global_concurrency_limit_by_name(name)

        with temporary_settings({PREFECT_API_URL: self.env["PREFECT_API_URL"]}):
            return asyncio.run(read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-slot")
    running = Server(tmp)
    try:
        running.start(MEMORY)  # Prefect's default; the restart test moves it to what `make server` sets
        yield running
    finally:
        running.stop()
        stack.sweep(running.env["PREFECT_API_URL"])


def _start(script: str, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", script, *args], cwd=PROJECT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _wait(condition, what: str, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"a process ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _holder_env(server: Server, cache: Path) -> dict:
    return server.env | {gpu_slot.MACHINE_ENV: MACHINE, "TRAIN_EMBEDDINGS_CACHE": str(cache)}


def _finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]


def test_a_cpu_training_takes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_EMBEDDINGS_CACHE", str(tmp_path))
    with gpu_slot.training_slot("cpu"):
        assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(gpu_slot.SLOT_ENV, "on")
    assert gpu_slot.wanted("cpu")
    monkeypatch.setenv(gpu_slot.SLOT_ENV, "off")
    assert not gpu_slot.wanted("cuda (NVIDIA H200)")
    monkeypatch.setenv(gpu_slot.SLOT_ENV, "sometimes")
    with pytest.raises(ValueError, match="auto, on or off"):
        gpu_slot.wanted("cpu")


def test_slot_names_follow_the_machine(monkeypatch):
    monkeypatch.setenv(gpu_slot.MACHINE_ENV, "gpu box/1")
    assert gpu_slot.slot_name() == "train-embeddings-gpu-gpu-box-1"
    assert gpu_slot.slot_name("node-7") == "train-embeddings-gpu-node-7"


def test_outside_prefect_a_gpu_training_takes_the_machine_lock_without_a_server(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_EMBEDDINGS_CACHE", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing there: it must not be asked
    monkeypatch.setenv(gpu_slot.MACHINE_ENV, MACHINE)
    lock = tmp_path / f"gpu-{MACHINE}.lock"
    with gpu_slot.training_slot("cuda (NVIDIA H200)"):
        assert lock.exists() and f'"pid": {os.getpid()}' in lock.read_text()
    assert not lock.exists()  # let go (and removed) on leaving


def test_two_trainings_on_one_machine_take_turns_without_a_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {gpu_slot.MACHINE_ENV: MACHINE, "TRAIN_EMBEDDINGS_CACHE": str(tmp_path / "cache")}
    script = HOLDER.replace("@task\n", "").replace('@flow(name=f"holder-{name}")\n', "")  # plain functions
    first = _start(script, ["a", str(tmp_path)], env, tmp_path / "a.log")
    _wait(lambda: (tmp_path / "a-in").exists(), "a trains", [first])
    second = _start(script, ["b", str(tmp_path)], env, tmp_path / "b.log")
    time.sleep(3)
    assert not (tmp_path / "b-in").exists()  # b waits for the lock
    (tmp_path / "a-go").write_text("")
    _finish(first, tmp_path / "a.log")
    _wait(lambda: (tmp_path / "b-in").exists(), "b trains", [second])
    (tmp_path / "b-go").write_text("")
    _finish(second, tmp_path / "b.log")
    assert float((tmp_path / "b-in").read_text()) >= float((tmp_path / "a-out").read_text())


def test_make_deploy_sets_up_each_workers_limit(server):
    env = server.env
    run = [sys.executable, "-m", "tasks.training.gpu_slot"]
    subprocess.run([*run, "gpu-a", "gpu-b"], cwd=PROJECT, env=env, check=True, capture_output=True)
    stack.cli(["gcl", "update", gpu_slot.slot_name("gpu-a"), "--limit", "3"], env)
    subprocess.run([*run, "--if-missing", "gpu-a"], cwd=PROJECT, env=env, check=True, capture_output=True)
    assert server.limit(gpu_slot.slot_name("gpu-a")).limit == 3  # a worker starting leaves it alone
    subprocess.run([*run, "gpu-a"], cwd=PROJECT, env=env, check=True, capture_output=True)
    assert [server.limit(gpu_slot.slot_name(m)).limit for m in ("gpu-a", "gpu-b")] == [1, 1]  # deploy resets


def test_two_runs_train_in_turn_on_one_machine_while_data_stages_run(server, tmp_path, nli_file):
    # separate caches: their lock files differ, so only the Prefect slot can make them take turns
    first = _start(HOLDER, ["a", str(tmp_path)], _holder_env(server, tmp_path / "cache-a"), tmp_path / "a.log")
    _wait(lambda: (tmp_path / "a-in").exists(), "run a trains", [first])
    second = _start(HOLDER, ["b", str(tmp_path)], _holder_env(server, tmp_path / "cache-b"), tmp_path / "b.log")
    _wait(lambda: "waiting for the GPU slot train-embeddings-gpu-test-box" in (tmp_path / "b.log").read_text(),
          "run b to wait for the slot", [first, second])  # fmt: skip

    # a run's data stages on the same machine, with the same cache, while one run trains and one waits
    data_env = _holder_env(server, tmp_path / "cache-a")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", DATA_STAGES, str(nli_file), str(tmp_path / "data")], cwd=PROJECT,
                          env=data_env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "pairs:" in done.stdout
    assert not (tmp_path / "b-in").exists() and not (tmp_path / "a-out").exists()  # both still where they were
    print(f"\ndata stages beside a training: {time.monotonic() - started:.1f} s")

    assert server.limit(gpu_slot.slot_name(MACHINE)).active_slots == 1
    (tmp_path / "a-go").write_text("")
    _finish(first, tmp_path / "a.log")
    _wait(lambda: (tmp_path / "b-in").exists(), "run b trains", [second])
    assert float((tmp_path / "b-in").read_text()) >= float((tmp_path / "a-out").read_text())
    (tmp_path / "b-go").write_text("")
    _finish(second, tmp_path / "b.log")
    limit = server.limit(gpu_slot.slot_name(MACHINE))
    assert (limit.limit, limit.active_slots) == (1, 0)  # created by the first run, limit 1, given back


def _hold_across_a_restart(server: Server, tmp_path: Path, name: str, storage: str) -> None:
    """Run ``name`` until it holds the slot, restart the server with ``storage``, then let it finish."""
    proc = _start(HOLDER, [name, str(tmp_path)], _holder_env(server, tmp_path / "cache"), tmp_path / f"{name}.log")
    _wait(lambda: (tmp_path / f"{name}-in").exists(), f"run {name} holds the slot", [proc])
    server.stop()
    server.start(storage)
    (tmp_path / f"{name}-go").write_text("")
    _finish(proc, tmp_path / f"{name}.log")


def test_a_server_restart_gives_the_slot_back_only_with_leases_on_disk(server, tmp_path):
    storage = _make_server_storage()
    assert storage == gpu_slot.LEASE_STORAGE
    name = gpu_slot.slot_name(MACHINE)

    _hold_across_a_restart(server, tmp_path, "kept-in-memory", storage)  # the lease died with the old server
    assert server.limit(name).active_slots == 1  # leaked: no run holds it, and none can take it
    stack.cli(["gcl", "update", name, "--active-slots", "0"], server.env)  # the fix the waiting run's log names

    _hold_across_a_restart(server, tmp_path, "kept-on-disk", storage)
    assert server.limit(name).active_slots == 0
