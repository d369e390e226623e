"""Publishing to the hub: the real huggingface_hub upload path against a stand-in of the hub on loopback.

The stand-in answers just the hub API that ``HfApi.whoami``, ``HfApi.create_repo`` and ``HfApi.upload_folder``
call for small files (the token's owner, repo creation, README metadata validation, preupload, the ndjson
commit), over real HTTP on 127.0.0.1; anything else (the reachability probe's HEAD of the root) gets a 404.
Every file is answered ``uploadMode: "regular"``, so its bytes travel base64 inside the commit and neither
LFS nor Xet storage is involved. The stand-in quotes the Authorization header in its error messages, as a
careless server might, so the tests can check that the token is scrubbed from what reaches the user.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub
import huggingface_hub.constants
import huggingface_hub.utils._http
import pytest

from tasks.shipping.publish import PublishError, check_repo_id, files_to_push, hub_token, push_folder, ready_to_push
from tests.loopback import serving

TOKEN = "hf_TESTSECRETdoNotLeak0123456789"
EXPIRED = "hf_EXPIREDsecretDoNotLeak9876543210"  # a token the stand-in does not know: 401
READ_ONLY = "hf_READONLYsecretDoNotLeak13579"
EXPECTED_FILES = ["1_Pooling/config.json", "README.md", "config.json", "modules.json", "onnx/model.onnx"]


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    body: bytes


@dataclass
class StandInHub:
    """What the stand-in was asked, and what it holds: repos (their create requests) and committed files."""

    base: str = ""
    requests: list[Seen] = field(default_factory=list)
    repos: dict[str, dict] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)
    refuse_create: set[str] = field(default_factory=set)  # 403 on create, as for a namespace the token cannot write
    fail_commit: set[str] = field(default_factory=set)  # 500 on every commit
    unsupported: list[str] = field(default_factory=list)  # commit lines the stand-in does not implement (lfsFile...)
    roles: dict[str, str] = field(default_factory=lambda: {TOKEN: "write", READ_ONLY: "read"})  # tokens it knows
    whoami_status: int | None = None  # answer whoami with this status instead (429: the rate limit)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, method: str, path: str, body: bytes, authorization: str | None) -> tuple[int, dict]:
        if method == "GET" and path == "/api/whoami-v2":
            return self.whoami(authorization)
        if method == "POST" and path == "/api/repos/create":
            return self.create(json.loads(body), authorization)
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path):
            repo, action, _revision = match.groups()
            if repo not in self.repos:
                return 404, {"error": "Repository not found"}
            if action == "preupload":
                files = json.loads(body)["files"]
                return 200, {
                    "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                }
            return self.commit(repo, body, authorization)
        return 404, {"error": f"the stand-in does not implement {method} {path}"}

    def whoami(self, authorization: str | None) -> tuple[int, dict]:
        """The token's owner and role, as the hub's whoami-v2 answers; 401 (quoting the header) for others."""
        if self.whoami_status:
            return self.whoami_status, {"error": "You've hit the rate limit"}
        token = (authorization or "").removeprefix("Bearer ")
        if token not in self.roles:
            return 401, {"error": f"Invalid credentials in Authorization header ({authorization})"}
        access = {"displayName": "ci", "role": self.roles[token]}
        return 200, {"type": "user", "name": "tester", "auth": {"type": "access_token", "accessToken": access}}

    def create(self, payload: dict, authorization: str | None) -> tuple[int, dict]:
        repo = f"{payload['organization']}/{payload['name']}"
        if repo in self.refuse_create:
            return 403, {"error": f"You don't have the rights to create a model under this namespace ({authorization})"}
        if repo in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.base}/{repo}"}
        self.repos[repo] = payload
        self.files[repo] = {}
        return 200, {"url": f"{self.base}/{repo}", "name": repo}

    def commit(self, repo: str, body: bytes, authorization: str | None) -> tuple[int, dict]:
        if repo in self.fail_commit:
            return 500, {"error": f"Internal Error while committing with {authorization}"}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header, operations = lines[0], lines[1:]
        assert header["key"] == "header"
        files = {}
        for op in operations:
            if op["key"] != "file" or op["value"].get("encoding") != "base64":
                self.unsupported.append(op["key"])
                return 400, {"error": f"the stand-in only takes regular base64 files, not {op['key']}"}
            files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
        self.files[repo].update(files)
        oid = hashlib.sha1(body).hexdigest()
        self.commits.append({"repo": repo, "summary": header["value"]["summary"], "oid": oid, "paths": sorted(files)})
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{self.base}/{repo}/commit/{oid}"}


def _handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the test output stays quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _answer(self) -> None:
            body = self._body()
            path = urlsplit(self.path).path
            authorization = self.headers.get("Authorization")
            with hub.lock:
                hub.requests.append(Seen(self.command, path, authorization, body))
                status, payload = hub.route(self.command, path, body, authorization)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    return Handler


@pytest.fixture()
def hub():
    """The stand-in hub on an ephemeral loopback port."""
    state = StandInHub()
    with serving(_handler(state)) as state.base:
        yield state


@pytest.fixture()
def online(monkeypatch, tmp_path):
    """huggingface_hub allowed to send requests (conftest sets HF_HUB_OFFLINE=1), its home under tmp_path."""
    constants = huggingface_hub.constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not constants.is_offline_mode()
    # anything the library would write (a token file, caches) lands where the test scans for the token
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    for name, value in {
        "HF_HOME": home,
        "HF_HUB_CACHE": home / "hub",
        "HF_ASSETS_CACHE": home / "assets",
        "HF_TOKEN_PATH": home / "token",
        "HF_STORED_TOKENS_PATH": home / "stored_tokens",
    }.items():
        monkeypatch.setattr(constants, name, str(value))
    monkeypatch.delenv("HF_TOKEN", raising=False)


def make_model_folder(root: Path) -> Path:
    """A small model folder with its card, and the things a training run leaves beside it that must stay local."""
    folder = root / "model"
    (folder / "onnx").mkdir(parents=True)
    (folder / "1_Pooling").mkdir()
    (folder / "checkpoint-5").mkdir()
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "Transformer"}]))
    (folder / "README.md").write_text("---\nlibrary_name: sentence-transformers\n---\n# tiny model\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "onnx" / "model.onnx").write_bytes(bytes(range(256)) * 16)  # 4 KB, not valid UTF-8
    (folder / "manifest.json").write_text(json.dumps({"run": "local only"}))
    (folder / "checkpoint-5" / "x.bin").write_bytes(b"\x00" * 64)
    (folder / ".tmp-lock").write_text("")
    return folder


def assert_no_token_under(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def assert_no_token_in_logs(caplog, token: str = TOKEN) -> None:
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for record in caplog.records:
        assert token not in record.getMessage(), record.name
    assert token not in caplog.text


@pytest.fixture()
def debug_logs(caplog, monkeypatch):
    """Everything at DEBUG, including huggingface_hub's request log with curl commands (HF_DEBUG)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_DEBUG", True)
    caplog.set_level(logging.DEBUG)
    for name in ("huggingface_hub", "tasks", "httpx", "httpx2", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.mark.parametrize("xet", [True, False], ids=["pipelined-upload", "create-commit"])
def test_push_uploads_the_model_files_to_the_hub(hub, online, debug_logs, tmp_path, monkeypatch, xet):
    # with hf_xet installed upload_folder streams through its pipelined uploader; without, through create_commit
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", not xet)
    folder = make_model_folder(tmp_path)
    assert files_to_push(folder) == EXPECTED_FILES

    url = push_folder(folder, "my-org/tiny-model", private=True, token=TOKEN, endpoint=hub.base, reachable=lambda: True)

    assert hub.repos["my-org/tiny-model"]["visibility"] == "private"
    assert hub.repos["my-org/tiny-model"]["type"] == "model"
    assert hub.unsupported == []
    assert hub.files["my-org/tiny-model"] == {name: (folder / name).read_bytes() for name in EXPECTED_FILES}
    [commit] = hub.commits
    assert commit["summary"] == "Upload model with train-embeddings"
    assert url == f"{hub.base}/my-org/tiny-model/commit/{commit['oid']}"
    assert {seen.authorization for seen in hub.requests} == {f"Bearer {TOKEN}"}
    assert [seen.path for seen in hub.requests if seen.method == "POST"][0] == "/api/repos/create"
    assert any("5 files" in r.getMessage() and "my-org/tiny-model" in r.getMessage() for r in debug_logs.records)
    assert_no_token_in_logs(debug_logs)
    assert_no_token_under(tmp_path)


def test_a_public_push_to_an_existing_repo(hub, online, tmp_path):
    folder = make_model_folder(tmp_path)
    push_folder(folder, "org/name", token=TOKEN, endpoint=hub.base, reachable=lambda: True)
    (folder / "README.md").write_text("# tiny model, card updated\n")

    push_folder(folder, "org/name", token=TOKEN, endpoint=hub.base, reachable=lambda: True, commit_message="v2")

    assert hub.repos["org/name"]["visibility"] == "public"
    assert [c["summary"] for c in hub.commits] == ["Upload model with train-embeddings", "v2"]
    assert hub.files["org/name"]["README.md"] == b"# tiny model, card updated\n"


def test_offline_nothing_is_sent(hub, online, tmp_path, monkeypatch):
    folder = make_model_folder(tmp_path)
    with pytest.raises(PublishError, match="cannot be reached"):
        push_folder(folder, "org/name", token=TOKEN, endpoint=hub.base, reachable=lambda: False)
    # the default check: HF_HUB_OFFLINE=1 (set by conftest for the session)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError, match="cannot be reached.*nothing was uploaded to org/name"):
        push_folder(folder, "org/name", token=TOKEN, endpoint=hub.base)
    assert hub.requests == []


@pytest.mark.parametrize(
    "repo, folder_change, message",
    [
        ("org/na me", None, "is not <owner>/<name>"),
        ("org/name", "README.md", "README.md missing"),
        ("org/name", "modules.json", "modules.json missing"),
    ],
)
def test_local_checks_come_before_any_request(hub, online, tmp_path, repo, folder_change, message):
    folder = make_model_folder(tmp_path)
    if folder_change:
        (folder / folder_change).unlink()
    with pytest.raises(PublishError, match=message):
        push_folder(folder, repo, token=TOKEN, endpoint=hub.base, reachable=lambda: True)
    assert hub.requests == []


def assert_scrubbed(error: PublishError) -> None:
    assert "***" in str(error)  # the stand-in quoted the Authorization header: it was there to scrub
    assert TOKEN not in str(error)
    assert error.__cause__ is None and error.__context__ is None
    assert TOKEN not in "".join(traceback.format_exception(error))


def test_a_refused_create_is_a_publish_error_without_the_token(hub, online, debug_logs, tmp_path):
    hub.refuse_create.add("someone-else/model")
    folder = make_model_folder(tmp_path)

    with pytest.raises(PublishError, match="someone-else/model") as caught:
        push_folder(folder, "someone-else/model", token=TOKEN, endpoint=hub.base, reachable=lambda: True)

    assert "403" in str(caught.value)
    assert_scrubbed(caught.value)
    assert hub.commits == [] and "someone-else/model" not in hub.repos
    assert_no_token_in_logs(debug_logs)


def test_a_failing_commit_is_a_publish_error_without_the_token(hub, online, debug_logs, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.utils._http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    hub.fail_commit.add("org/name")
    folder = make_model_folder(tmp_path)

    with pytest.raises(PublishError, match="500") as caught:
        push_folder(folder, "org/name", token=TOKEN, endpoint=hub.base, reachable=lambda: True)

    assert_scrubbed(caught.value)
    assert hub.files["org/name"] == {}
    assert len([seen for seen in hub.requests if "/commit/" in seen.path]) > 1  # huggingface_hub retried it
    assert_no_token_in_logs(debug_logs)


def test_an_empty_token_is_refused_before_any_request(hub, online, tmp_path):
    with pytest.raises(PublishError, match="no Hugging Face token"):
        push_folder(make_model_folder(tmp_path), "org/name", token="", endpoint=hub.base, reachable=lambda: True)
    assert hub.requests == []


class FakeSecret:
    def __init__(self, value: str) -> None:
        self.value = value

    def get(self) -> str:
        return self.value


def no_block(name: str, **kwargs):
    raise ValueError(f"Unable to find block document named {name} for block type secret")


def test_hub_token_prefers_hf_token(monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(Secret, "load", lambda name, **kwargs: FakeSecret("hf_fromTheBlock"))
    assert hub_token() == TOKEN


def test_hub_token_from_the_secret_block(monkeypatch):
    from prefect.blocks.system import Secret

    asked = []
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(Secret, "load", lambda name, **kwargs: asked.append(name) or FakeSecret(TOKEN))
    assert hub_token() == TOKEN
    assert hub_token("team-hf-token") == TOKEN
    assert asked == ["hf-token", "team-hf-token"]


@pytest.mark.parametrize("load", [no_block, lambda name, **kwargs: FakeSecret("")], ids=["no-block", "empty-block"])
def test_hub_token_missing_says_how_to_provide_one(monkeypatch, load):
    from prefect.blocks.system import Secret

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(Secret, "load", load)
    with pytest.raises(PublishError) as caught:
        hub_token()
    message = str(caught.value)
    assert "HF_TOKEN" in message and "'hf-token'" in message
    assert "Secret(value='hf_...').save('hf-token')" in message
    assert "prefect block create secret" in message


# --- before any stage: the repo id, the hub and the token, shown to the hub (whoami) ---


@pytest.fixture()
def hub_endpoint(hub, online, monkeypatch):
    """The stand-in as huggingface_hub's endpoint (what HF_ENDPOINT sets at its import), HF_HUB_OFFLINE unset
    (conftest sets it: the reachability check reads it now), so the real reachability probe and whoami run."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.base)
    return hub


def _whoamis(hub: StandInHub) -> list[str | None]:
    return [seen.authorization for seen in hub.requests if seen.path == "/api/whoami-v2"]


def _asked(hub: StandInHub) -> list[tuple[str, str]]:
    """The requests, but for huggingface_hub's own fetch of its agent registry (once a process, with no token,
    when it first builds a user agent)."""
    assert all(seen.authorization is None for seen in hub.requests if seen.path == "/api/agent-harnesses")
    return [(seen.method, seen.path) for seen in hub.requests if seen.path != "/api/agent-harnesses"]


def test_ready_to_push_shows_the_token_to_the_hub_first(hub_endpoint, debug_logs, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert ready_to_push("org/name") == TOKEN
    assert _asked(hub_endpoint) == [("HEAD", "/"), ("GET", "/api/whoami-v2")]
    assert _whoamis(hub_endpoint) == [f"Bearer {TOKEN}"]
    assert any("tester's (write)" in r.getMessage() and "HF_TOKEN" in r.getMessage() for r in debug_logs.records)
    assert_no_token_in_logs(debug_logs)


@pytest.mark.parametrize("block", [None, "team-hf-token"], ids=["HF_TOKEN", "secret-block"])
def test_an_invalid_or_expired_token_fails_before_any_stage_naming_its_source(
    hub_endpoint, debug_logs, monkeypatch, block
):
    from prefect.blocks.system import Secret

    if block is None:
        monkeypatch.setenv("HF_TOKEN", f"  {EXPIRED}\n")
    else:
        monkeypatch.setattr(Secret, "load", lambda name, **kwargs: FakeSecret(EXPIRED if name == block else TOKEN))

    with pytest.raises(PublishError, match="invalid or expired") as caught:
        ready_to_push("org/name", block or "hf-token")

    message = str(caught.value)
    source = "the HF_TOKEN environment variable" if block is None else "the Prefect Secret block 'team-hf-token'"
    assert f"the Hugging Face token from {source} is invalid or expired" in message and "401" in message
    assert _whoamis(hub_endpoint) == [f"Bearer {EXPIRED}"]  # the stand-in quoted it in its answer
    assert EXPIRED not in message and EXPIRED not in "".join(traceback.format_exception(caught.value))
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert_no_token_in_logs(debug_logs, EXPIRED)


def test_a_read_token_fails_before_any_stage(hub_endpoint, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", READ_ONLY)
    caplog.set_level(logging.INFO)
    with pytest.raises(PublishError, match="from the HF_TOKEN environment variable is a read token") as caught:
        ready_to_push("org/name")
    assert "org/name needs a write token" in str(caught.value) and READ_ONLY not in str(caught.value)
    assert_no_token_in_logs(caplog, READ_ONLY)


def test_a_hub_that_cannot_check_the_token_now_does_not_stop_the_run(hub_endpoint, caplog, monkeypatch):
    """A rate limit (429) on whoami says nothing about the token: a warning, and the push checks it again."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub_endpoint.whoami_status = 429
    assert ready_to_push("org/name") == TOKEN
    assert any(r.levelno == logging.WARNING and "429" in r.getMessage() for r in caplog.records)
    assert_no_token_in_logs(caplog)


def test_an_unreachable_hub_fails_as_before_and_no_token_is_sent(hub_endpoint, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError, match="cannot be reached.*nothing was exported or uploaded to org/name"):
        ready_to_push("org/name")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", closed)
    with pytest.raises(PublishError, match="cannot be reached"):
        ready_to_push("org/name")
    with pytest.raises(PublishError, match="is not <owner>/<name>"):  # the repo id first, before any request
        ready_to_push("name")
    assert hub_endpoint.requests == []


_READY = """
from tasks.shipping.publish import PublishError, ready_to_push
try:
    ready_to_push("org/name", None)
except PublishError as exc:
    print(exc)
"""


def test_hf_endpoint_decides_which_hub_checks_the_token(hub, tmp_path):
    """As a user sets it: HF_ENDPOINT in the environment before huggingface_hub is imported, HF_TOKEN expired."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "TRANSFORMERS_OFFLINE"}
    env |= {"HF_ENDPOINT": hub.base, "HF_HUB_OFFLINE": "0", "HF_TOKEN": EXPIRED, "HF_HOME": str(tmp_path / "home")}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _READY], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"HF_TOKEN environment variable is invalid or expired (the hub at {hub.base} answered 401" in done.stdout
    assert EXPIRED not in done.stdout + done.stderr
    assert _asked(hub) == [("HEAD", "/"), ("GET", "/api/whoami-v2")]


@pytest.mark.parametrize("repo", ["org/name", "my-org/model.v2", "a/b", "user_1/all-MiniLM-L6-v2-nli", "o/" + "n" * 96])
def test_check_repo_id_accepts(repo):
    check_repo_id(repo)


@pytest.mark.parametrize(
    "repo, why",
    [
        ("name", "name the user or organisation too, e.g. my-org/name"),  # our rule: huggingface_hub takes it
        ("a/b/c", "must be in the form"),
        ("org/", "must use alphanumeric chars"),
        ("/name", "must use alphanumeric chars"),
        ("../x", "must use alphanumeric chars"),
        ("org/na me", "must use alphanumeric chars"),
        ("org/..x", "must use alphanumeric chars"),
        ("org/-x", "must use alphanumeric chars"),
        ("org/x.", "must use alphanumeric chars"),
        ("o/" + "n" * 97, "the maximum length is 96"),
        ("org/a--b", "Cannot have -- or .."),
        ("org/model.git", "cannot end by '.git'"),
        ("", "must use alphanumeric chars"),
    ],
)
def test_check_repo_id_rejects(repo, why):
    """huggingface_hub's own rules (its reason quoted), and an owner: the message names the flag and the form."""
    with pytest.raises(PublishError, match=r"^--repo: .* is not <owner>/<name>: ") as caught:
        check_repo_id(repo)
    assert why in str(caught.value)


def test_files_to_push_leaves_out_run_leftovers(tmp_path):
    folder = make_model_folder(tmp_path)
    (folder / "onnx" / "manifest.json").write_text("{}")  # only the top-level manifest is the run's
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"")
    (folder / "onnx" / ".model.onnx.lock").write_text("")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "upload.json").write_text("{}")
    assert files_to_push(folder) == sorted([*EXPECTED_FILES, "onnx/manifest.json"])


def test_files_to_push_needs_a_model_folder_with_its_card(tmp_path):
    folder = make_model_folder(tmp_path)
    (folder / "README.md").unlink()
    with pytest.raises(PublishError, match="README.md") as caught:
        files_to_push(folder)
    assert str(folder) in str(caught.value)
    with pytest.raises(PublishError, match="not a directory"):
        files_to_push(tmp_path / "missing")


def test_file_names_are_not_taken_as_globs():
    from huggingface_hub.utils import filter_repo_objects

    from tasks.shipping.publish import _exact_pattern

    names = ["weights[1].bin", "weights1.bin", "a*b.txt", "axb.txt", "q?.json", "qq.json"]
    for name in names:
        assert list(filter_repo_objects(names, allow_patterns=[_exact_pattern(name)])) == [name]
