"""Publishing a model folder to the Hugging Face Hub, with a token that is never written anywhere.

The token comes from ``HF_TOKEN`` or a Prefect Secret block; it is handed to ``HfApi`` in memory only,
never logged, never saved to the huggingface_hub token file, and scrubbed from every error message
(hub errors can quote the request, and the original exception holds the request's headers, so it is
dropped rather than chained). Everything that can be checked locally (the repo id, the folder and its
files) is checked before anything touches the network, an unreachable hub fails before any request, and
the token is shown to the hub (``whoami``) before any work, so an invalid or expired one fails at once.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from tasks.store import transfer
from tasks.store.artifacts import artifacts_root, atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_SECRET_BLOCK = "hf-token"
DEFAULT_COMMIT_MESSAGE = "Upload model with train-embeddings"
UNREACHABLE = "the Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE is set)"
# a model folder the hub can show: sentence-transformers' module list and the model card
REQUIRED_FILES = ("modules.json", "README.md")


class PublishError(RuntimeError):
    """A push that cannot or must not happen."""


def check_repo_id(repo: str) -> None:
    """Reject a malformed repo id here, with a message naming the flag, rather than as a hub 400 mid-upload:
    huggingface_hub's own rules (``validate_repo_id``), and an owner."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise PublishError(f"--repo: {repo!r} is not <owner>/<name>: {exc}") from None
    # huggingface_hub takes a bare name as a repo of the token's own account. Ours names its owner: the push
    # record (``pushed_file``) is kept per repo id, and a bare name would mean another repo with another token
    if "/" not in repo:
        raise PublishError(
            f"--repo: {repo!r} is not <owner>/<name>: name the user or organisation too, e.g. my-org/{repo}"
        )


def _load_secret(name: str) -> str:
    """The Secret block's value; synchronous even when called from async code (Prefect's async_dispatch)."""
    from prefect.blocks.system import Secret

    block = Secret.load(name)
    if inspect.iscoroutine(block):  # called inside an event loop: async_dispatch handed back the coroutine
        block.close()
        block = Secret.load(name, _sync=True)
    return str(block.get())


def hub_token(secret_block: str | None = DEFAULT_SECRET_BLOCK) -> str:
    """The hub token from HF_TOKEN, else from the Prefect Secret block ``secret_block``; never from a file on disk."""
    return _token_and_source(secret_block)[0]


def _token_and_source(secret_block: str | None) -> tuple[str, str]:
    """The token and where it came from, in words (for errors: never the token itself)."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token, "the HF_TOKEN environment variable"
    reason = "no Secret block was asked for"
    if secret_block:
        try:
            token = _load_secret(secret_block).strip()
        except Exception as exc:  # no server, no block, a block of another type: all mean "not found"
            reason = f"the Prefect Secret block {secret_block!r} could not be loaded ({type(exc).__name__})"
        else:
            if token:
                return token, f"the Prefect Secret block {secret_block!r}"
            reason = f"the Prefect Secret block {secret_block!r} is empty"
    block = secret_block or DEFAULT_SECRET_BLOCK
    raise PublishError(
        f"no Hugging Face token: HF_TOKEN is not set and {reason}. Set HF_TOKEN to a write token, or store one "
        f"in the Prefect Secret block {block!r}: `prefect block create secret` (name it {block}), or "
        f"python -c \"from prefect.blocks.system import Secret; Secret(value='hf_...').save('{block}')\""
    )


def _skipped(parts: tuple[str, ...]) -> bool:
    """Files that are not part of the published model: the run's manifest, checkpoints, temporary and lock files."""
    if parts == ("manifest.json",):
        return True
    return any(part.startswith(".") or part.startswith("checkpoint-") or part == "__pycache__" for part in parts)


def files_to_push(folder: Path) -> list[str]:
    """The files of ``folder`` that go to the hub, as sorted POSIX paths relative to it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a directory: nothing to publish")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise PublishError(
            f"{folder} is not a model folder with its card: {', '.join(missing)} missing "
            "(modules.json comes with a saved sentence-transformers model, README.md is its model card)"
        )
    files = []
    for root, dirs, names in os.walk(folder):  # symlinked folders are not followed
        base = Path(root).relative_to(folder).parts
        dirs[:] = [name for name in dirs if not _skipped((*base, name))]
        files.extend(
            Path(*base, name).as_posix()
            for name in names
            if not _skipped((*base, name)) and (Path(root) / name).is_file()
        )
    return sorted(files)


def _exact_pattern(path: str) -> str:
    """An fnmatch pattern matching exactly ``path``, so a file named ``w[1].bin`` is not taken as a glob."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def push_folder(
    folder: Path,
    repo: str,
    *,
    private: bool = False,
    token: str,
    endpoint: str | None = None,
    reachable: Callable[[], bool] | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Create ``repo`` if needed and commit the model folder's files to it; returns the commit's URL."""
    folder = Path(folder)
    check_repo_id(repo)
    files = files_to_push(folder)
    if not token or not token.strip():
        raise PublishError(f"no Hugging Face token given: nothing was uploaded to {repo}")
    if reachable is None:
        from tasks.models.resolve import hub_reachable

        reachable = hub_reachable
    if not reachable():
        raise PublishError(
            f"the Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE is set): nothing was uploaded to {repo}"
        )

    size_mb = sum((folder / name).stat().st_size for name in files) / 1e6
    log.info("uploading %d files (%.1f MB) from %s to %s", len(files), size_mb, folder, repo)
    try:
        import huggingface_hub

        api = huggingface_hub.HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=folder,
            repo_id=repo,
            repo_type="model",
            allow_patterns=[_exact_pattern(name) for name in files],
            commit_message=commit_message,
        )
    except Exception as exc:
        # raised outside this block, so the original (whose request holds the Authorization header) is not
        # even the new error's __context__
        message = f"pushing {folder} to {repo} failed: {type(exc).__name__}: {exc}".replace(token, "***")
    else:
        url = getattr(info, "commit_url", None) or str(info)  # a CommitInfo: a str whose value is its commit URL
        log.info("uploaded %d files to %s: %s", len(files), repo, url)
        return url
    raise PublishError(message) from None


def ready_to_push(repo: str, secret_block: str | None = DEFAULT_SECRET_BLOCK, endpoint: str | None = None) -> str:
    """What a push needs, checked before any work: a valid repo id, a reachable hub and a token (returned)
    that the hub accepts."""
    from tasks.models.resolve import hub_reachable

    check_repo_id(repo)
    if not hub_reachable():
        raise PublishError(UNREACHABLE + f": nothing was exported or uploaded to {repo}")
    token, source = _token_and_source(secret_block)
    check_token(token, source, repo, endpoint)
    return token


def check_token(token: str, source: str, repo: str, endpoint: str | None = None) -> dict:
    """The hub's ``whoami`` for ``token`` (from ``source``, in words), so an invalid or expired token (401), or a
    read token, fails before any work rather than after training; the message names where the token came from,
    never its value. Other answers (a rate limit, a hub in trouble) are logged: the push checks the token again,
    and a failed push is retried by the next run."""
    import httpx2  # huggingface_hub's HTTP library
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=endpoint or constants.ENDPOINT)  # the endpoint read now, the one the push will use
    try:
        who = api.whoami(token=token)
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status != 401:
            log.warning("the hub at %s could not check the Hugging Face token from %s: %s %s; going on",
                        api.endpoint, source, status, type(exc).__name__)  # fmt: skip
            return {}
        message = (
            f"the Hugging Face token from {source} is invalid or expired (the hub at {api.endpoint} answered 401 "
            f"to whoami): put a valid write token ({api.endpoint}/settings/tokens) in {source}"
        )
    except (httpx2.TransportError, OfflineModeIsEnabled):  # gone since hub_reachable: as an unreachable hub
        message = UNREACHABLE + f": nothing was exported or uploaded to {repo}"
    else:
        role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
        log.info("the Hugging Face token from %s is %s's (%s)", source, who.get("name"), role or "role not given")
        if role != "read":
            return who
        message = f"the Hugging Face token from {source} is a read token: pushing to {repo} needs a write token"
    # raised outside the except clauses, so the request (its Authorization header) is not even the __context__
    raise PublishError(message.replace(token, "***")) from None


def pushed_file(data_dir: str | Path, repo: str) -> Path:
    """Where a data folder records what it last published to ``repo``."""
    return artifacts_root(data_dir) / "champion" / "pushed" / f"{repo.replace('/', '--')}.json"


def read_pushed(data_dir: str | Path, repo: str) -> dict | None:
    """The last push to ``repo`` from this data folder (model key, release key, commit URL, time), or None."""
    path = pushed_file(data_dir, repo)
    transfer.pull_folder(path.parent, path.name, mutable=True)  # a URL store's: what any machine published
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def record_pushed(data_dir: str | Path, repo: str, facts: dict) -> None:
    """Remember a finished push, so a champion is published once, and a failed push is retried by the next run."""
    path = pushed_file(data_dir, repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(facts, indent=2))
    transfer.push_files([path])


def why_not_push(data_dir: str | Path, repo: str, model_key: str, champion: dict | None) -> str | None:
    """The flow's rule: publish each new champion once, and retry one whose push failed. Returns why a run
    with ``model_key`` does not push (None: it does)."""
    if (champion or {}).get("model_key") != model_key:
        return f"{model_key} is not the champion"
    done = read_pushed(data_dir, repo) or {}
    if done.get("model_key") == model_key:
        return f"the champion {model_key} is published already ({done.get('url')})"
    return None


def publish_release(
    folder: Path, data_dir: str | Path, repo: str, model_key: str | None, release_key: str, *, private: bool,
    token: str,
) -> str:  # fmt: skip
    """Push a release folder and record it (model, release, commit URL, time), so the flow never publishes
    the same model to ``repo`` again, whether the flow or the ``push`` command published it."""
    url = push_folder(folder, repo, private=private, token=token)
    facts = {"model_key": model_key, "release_key": release_key, "url": url}
    record_pushed(data_dir, repo, facts | {"pushed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    return url
