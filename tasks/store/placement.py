"""Where a run's store lies, checked before any stage: a URL store that works, and never a folder that goes away.

Prefect's process worker runs each flow run in a temporary directory (``tempfile.TemporaryDirectory`` with
the suffix ``prefect``) that it deletes when the run ends, and Docker and Kubernetes pools start each run in
a fresh container: a relative ``data_dir`` such as ``data`` then lies in something thrown away with the run,
and every scheduled retrain starts cold with no champion. Such a run still runs, but warns loudly, naming
the fix.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tasks.store import remote
from tasks.store.champion import check_champions

log = logging.getLogger(__name__)

STORE_ENV = "TRAIN_EMBEDDINGS_STORE"  # the documented variable deployments take their store from (prefect.yaml)
WORKER_SUFFIX = "prefect"  # Prefect's process worker: TemporaryDirectory(suffix="prefect")


def run_folder(cwd: Path | None = None) -> Path | None:
    """The flow run's temporary working directory this process runs in, if it runs in one."""
    here = (cwd or Path.cwd()).resolve()
    temp = Path(tempfile.gettempdir()).resolve()
    for folder in (here, *here.parents):
        if folder.parent == temp and folder.name.startswith("tmp") and folder.name.endswith(WORKER_SUFFIX):
            return folder
    return None


def ephemeral_warning(data_dir: str, cwd: Path | None = None) -> str | None:
    """The warning for a local ``data_dir`` inside the flow run's temporary working directory, else None."""
    if remote.is_url(data_dir):
        return None
    temporary = run_folder(cwd)
    if temporary is None:
        return None
    folder = Path(data_dir).resolve()
    if folder != temporary and temporary not in folder.parents:
        return None
    return (
        f"data_dir {folder} lies inside this flow run's temporary working directory {temporary}, which the "
        "worker deletes when the run ends: the artifacts, the embedding cache and the champion go with it, and "
        f"the next run starts cold. Give the deployment a persistent store: set {STORE_ENV}=s3://bucket/prefix "
        "(or a folder outside the run, e.g. /srv/train-embeddings) when running `make deploy`, or pass "
        "-p data_dir=... (README, 'Several machines, one store')"
    )


def settle(data_dir: str) -> str:
    """``data_dir`` as runs record it (a URL in its normal form, a folder absolute), once it is known to work: a
    URL store reachable with these credentials and a conditional write, a folder that outlives the run (or a
    loud warning), and sound champion records (a damaged one stops the run now, not after training)."""
    remote.check(data_dir)
    warning = ephemeral_warning(data_dir)
    if warning is not None:
        _warn(warning)
    data_dir = remote.normalise(data_dir)
    check_champions(data_dir)
    return data_dir


def _warn(message: str) -> None:
    """In the flow run's log (Prefect's logger when there is a run) and this module's."""
    try:
        from prefect import get_run_logger

        get_run_logger().warning(message)
    except Exception:  # noqa: BLE001 -- outside a run there is no run logger
        log.warning(message)
