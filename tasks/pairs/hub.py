"""Hub datasets pinned by revision: ``<org>/<name>[:<config>][@<revision>]`` read at one commit.

A branch or tag (``main`` unless given) is resolved to its commit sha once, when the run starts; that
sha keys the raw artifact and is what is read, so a dataset that moves on the hub makes a new artifact
instead of silently changing an old one. Offline, the local Hugging Face cache answers: the commit a
branch was last seen at, or a sha that is there; nothing cached fails before anything loads, saying
what to pass instead. Only the dataset card and the chosen config's train files are downloaded.
Tokens are huggingface_hub's own business (it reads ``HF_TOKEN``): nothing here logs or stores one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tasks.models.resolve import hub_offline  # the one offline policy, also the models'
from tasks.pairs.tables import DATA_SUFFIXES, DataError
from tasks.store.artifacts import file_sha256

log = logging.getLogger(__name__)

SPLIT = "train"
DEFAULT_REVISION = "main"
GLUE_ALIAS, GLUE_CONFIG = "glue/mnli", "mnli"  # the seed's name: GLUE's MNLI config
CARD = "README.md"
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
NOT_DATA = (".md", ".txt", ".py")  # a card, a licence, a loading script: never a data file
FOLDER_REVISION = "sha256:"  # a local folder in the hub's layout: the hash of its card and data files


@dataclass(frozen=True)
class HubSource:
    """A hub dataset as named by the user; ``repo`` may be a local folder in the hub's layout (GLUE's stand-in)."""

    repo: str
    config: str | None
    revision: str = DEFAULT_REVISION
    alias: str | None = None

    @property
    def folder(self) -> Path | None:
        path = Path(self.repo).expanduser()
        return path if path.is_dir() else None

    def pinned(self, sha: str) -> str:
        """The source name that reads exactly this commit."""
        return f"{self.alias}@{sha}" if self.alias else f"{self.label}@{sha}"

    @property
    def label(self) -> str:
        return self.repo if self.config is None else f"{self.repo}:{self.config}"


@dataclass(frozen=True)
class Snapshot:
    """The files of one commit: the config chosen from the card, its train-split patterns, the data files."""

    folder: Path
    config: str | None
    patterns: list[str] | None  # None: the card lists no configs and datasets infers the splits
    files: list[Path]


def glue_repo() -> str:
    """The hub dataset holding GLUE; a mirror or a local copy in the hub's layout can stand in."""
    return os.environ.get("TRAIN_EMBEDDINGS_GLUE_REPO", "nyu-mll/glue")


def parse_hub_source(source: str) -> HubSource | None:
    """``<org>/<name>[:<config>][@<revision>]`` or ``glue/mnli[@<revision>]``; None when not hub-shaped."""
    name, _, revision = source.partition("@")
    repo, _, config = name.partition(":")
    if (
        not REPO_ID.fullmatch(repo)
        or repo.lower().endswith(DATA_SUFFIXES)
        or (config and not re.fullmatch(r"[\w.-]+", config))
    ):
        return None  # a missing local file such as data/pairs.parquet is not a hub name
    revision = revision or DEFAULT_REVISION
    if repo == GLUE_ALIAS and not config:
        return HubSource(glue_repo(), GLUE_CONFIG, revision, alias=GLUE_ALIAS)
    return HubSource(repo, config or None, revision)


def hub_cache_dir() -> Path:
    """The hub cache as the environment says now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _unreachable() -> tuple[type[BaseException], ...]:
    """What huggingface_hub lets through when the hub cannot be reached (offline mode, its HTTP client's errors)."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, HfHubHTTPError]
    for client in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(client).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def resolve_revision(spec: HubSource) -> str:
    """The commit sha the source reads: asked of the hub when online, else what the local cache holds."""
    if spec.folder is not None:
        return local_revision(spec)
    if hub_offline():
        return cached_revision(spec.repo, spec.revision, "offline")
    if COMMIT_SHA.fullmatch(spec.revision):
        return spec.revision  # a commit never moves: nothing to ask
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return HfApi().dataset_info(spec.repo, revision=spec.revision).sha
    except RevisionNotFoundError as exc:
        raise DataError(f"{spec.repo}: the hub has no revision {spec.revision!r} of this dataset") from exc
    except RepositoryNotFoundError as exc:
        raise DataError(
            f"{spec.repo}: no such dataset on the hub, or it is private or gated (log in or set HF_TOKEN), "
            "and no local file or folder of that name exists"
        ) from exc
    except _unreachable() as exc:
        return cached_revision(spec.repo, spec.revision, f"hub unreachable ({type(exc).__name__})")


def cached_revision(repo: str, revision: str, why: str) -> str:
    """The commit of ``revision`` in the local cache (a branch as last seen online, or a cached sha)."""
    storage = hub_cache_dir() / ("datasets--" + repo.replace("/", "--"))
    sha = revision if COMMIT_SHA.fullmatch(revision) else None
    ref = storage / "refs" / revision
    if sha is None and ref.is_file():
        sha = ref.read_text().strip()
    if sha is not None and (storage / "snapshots" / sha).is_dir():
        if sha == revision:
            log.info("%s: using the cached revision %s of %s", why, sha, repo)
        else:
            log.warning("%s: using the cached revision %s of %s (%r as last seen online)", why, sha, repo, revision)
        return sha
    cached = sorted(p.name for p in (storage / "snapshots").glob("*") if p.is_dir())
    exact = f", or an exact cached revision: {' or '.join(f'{repo}@{s}' for s in cached)}" if cached else ""
    raise DataError(
        f"{repo}@{revision}: {why} and not in the local Hugging Face cache ({hub_cache_dir()}), and no local "
        f"file or folder of that name exists. Run once with network to cache it, or pass a local file or "
        f"folder as nli_source{exact}"
    )


def local_revision(spec: HubSource) -> str:
    """A local folder's revision: the hash of its card and chosen data files, checked against a pinned one."""
    digest = hashlib.sha256()
    snapshot = folder_snapshot(spec.folder, spec.config, spec.repo)
    for path in [spec.folder / CARD, *snapshot.files]:
        if path.is_file():
            digest.update(f"{path.relative_to(spec.folder).as_posix()}\0{file_sha256(path)}\n".encode())
    revision = FOLDER_REVISION + digest.hexdigest()
    if spec.revision.startswith(FOLDER_REVISION) and spec.revision != revision:
        raise DataError(f"{spec.repo}: its files changed since the run pinned {spec.revision} (now {revision})")
    return revision


def chosen_patterns(card: Path | None, config: str | None, label: str) -> tuple[str | None, list[str] | None]:
    """The config the card's ``configs:`` pick (as datasets picks it) and its train split's file patterns."""
    if card is None or not card.is_file():
        return config, None
    from datasets.data_files import sanitize_patterns
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    try:
        configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(card).data)
        name = config or configs.get_default_config_name()
    except ValueError as exc:
        raise DataError(f"{label}: cannot read the dataset card's configs: {exc}") from exc
    if not configs:
        return config, None
    if name is None:
        raise DataError(
            f"{label}: the card lists configs {list(configs)} and none is the default; "
            "name one as <org>/<name>:<config>"
        )
    if name not in configs:
        raise DataError(f"{label}: no config {name!r}; the card lists {list(configs)}")
    data_dir, data_files = configs[name].get("data_dir"), configs[name].get("data_files")
    if data_files is None:
        return name, [f"{data_dir}/*"] if data_dir else None
    splits = sanitize_patterns(data_files)
    if SPLIT not in splits:
        raise DataError(f"{label}: config {name!r} has no {SPLIT!r} split, only {list(splits)}")
    return name, [f"{data_dir}/{p}" if data_dir else p for p in splits[SPLIT]]


def folder_snapshot(folder: Path, config: str | None, label: str) -> Snapshot:
    """The chosen config's data files present in ``folder`` (a cached snapshot or a local copy)."""
    name, patterns = chosen_patterns(folder / CARD, config, label)
    every = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    relative = {p: p.relative_to(folder).as_posix() for p in every}
    if patterns is None:
        files = [p for p in every if p.suffix not in NOT_DATA and not relative[p].startswith(".")]
    else:
        files = [p for p in every if any(fnmatch.fnmatch(relative[p], pattern) for pattern in patterns)]
    if not files:
        raise DataError(
            f"{label}: no data files for config {name!r} split {SPLIT!r} in {folder} (patterns {patterns}); "
            "run once with network to complete the cache, or pass a local file or folder as nli_source"
        )
    return Snapshot(folder, name, patterns, files)


def fetch_card(repo: str, where: dict) -> Path | None:
    """The dataset card at the commit, or None when the dataset has none (datasets then infers the splits)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, CARD, **where))
    except LocalEntryNotFoundError:
        raise  # not cached or unreachable (a subclass of the next): not "no card", which would fetch every config
    except EntryNotFoundError:
        return None


def fetch_snapshot(spec: HubSource, sha: str) -> Snapshot:
    """The commit's card first, then only the chosen config's train files (from the cache when there)."""
    if spec.folder is not None:
        return folder_snapshot(spec.folder, spec.config, spec.repo)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = {"repo_type": "dataset", "revision": sha, "cache_dir": hub_cache_dir(), "local_files_only": hub_offline()}
    label = f"{spec.label}@{sha}"
    try:
        _, patterns = chosen_patterns(fetch_card(spec.repo, where), spec.config, label)
        folder = snapshot_download(spec.repo, allow_patterns=None if patterns is None else [CARD, *patterns], **where)
    except (LocalEntryNotFoundError, *_unreachable()) as exc:
        raise DataError(f"{label}: cannot fetch the data files ({type(exc).__name__}: {exc})") from exc
    return folder_snapshot(Path(folder), spec.config, label)


def read_dataset(snapshot: Snapshot, label: str):
    """The train split as datasets reads it, given the chosen config's own files (so others need not be there)."""
    from datasets import load_dataset

    data_files = None if snapshot.patterns is None else {SPLIT: snapshot.patterns}
    try:
        return load_dataset(str(snapshot.folder), snapshot.config, split=SPLIT, data_files=data_files)
    except Exception as exc:  # datasets raises many types for unreadable files and bad cards
        raise DataError(f"{label}: cannot read config {snapshot.config!r} split {SPLIT!r}: {exc}") from exc
