"""Which failures of a Hugging Face Hub transfer are the network's, so that trying again later may succeed.

A connection that failed or timed out, or the hub answering 408, 429 or a 5xx, is retried (with backoff, by
the Prefect tasks that download and upload: ``HUB_RETRIES``). Nothing else is: bad input (a ValueError such
as a DataError, a malformed repo id, a missing token), offline mode, any other answer of the hub (404, 401,
gated) and the store's own errors (botocore and s3fs retry those inside) fail at once, with their message.
The cause chain is followed, since a DataError may carry the connection error that made it; an error that
keeps its cause only as text (a push error drops the original, whose request holds the token) is read by
the type name it quotes.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import re
from collections.abc import Iterator
from typing import Any

from prefect.tasks import exponential_backoff

RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_QUOTED_TYPE = re.compile(r"\b([A-Z]\w*): ")  # "... failed: ConnectError: [Errno 111] ..."
_QUOTED_STATUS = re.compile(r"\berror '(\d{3}) ")  # httpx's "Server error '503 Service Unavailable' for url ..."


@functools.cache
def network_types() -> tuple[type[BaseException], ...]:
    """The exception types of a connection or transfer that failed, of every HTTP client the hub may use."""
    found: list[type[BaseException]] = [builtins.ConnectionError]
    for client in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(client)
        except ImportError:
            continue
        found += [module.TimeoutException, module.NetworkError, module.RemoteProtocolError]
    try:
        from requests import exceptions
    except ImportError:
        pass
    else:
        found += [exceptions.ConnectionError, exceptions.Timeout, exceptions.ChunkedEncodingError]
    return tuple(found)


@functools.cache
def _network_names() -> frozenset[str]:
    """The names of those types and of every subclass, as an error message quotes them."""
    names: set[str] = set()
    pending = list(network_types())
    while pending:
        cls = pending.pop()
        if cls.__name__ not in names:
            names.add(cls.__name__)
            pending += cls.__subclasses__()
    return frozenset(names - {"OfflineModeIsEnabled"})


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception, then what caused it (``raise ... from``) or what it was raised while handling."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _quoted_failure(message: str) -> bool:
    """Whether a message quotes a network error's type, or an HTTP status worth another try."""
    if any(name in _network_names() for name in _QUOTED_TYPE.findall(message)):
        return True
    return any(int(status) in RETRIED_STATUS for status in _QUOTED_STATUS.findall(message))


def is_network_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a failed connection or transfer, or a retryable hub answer."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from tasks.store.remote import StoreError

    for link in _chain(exc):
        if isinstance(link, OfflineModeIsEnabled | StoreError):
            return False  # offline stays offline; the store retried already
        if isinstance(link, HfHubHTTPError):  # the hub answered: only some answers change
            return getattr(link.response, "status_code", None) in RETRIED_STATUS
        if isinstance(link, network_types()) or _quoted_failure(str(link)):
            return True
    return False


def retry_on_network_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry only when the network failed (it must be a plain function)."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_network_failure(exc)


# For @task(...): 3 more tries after 10, 20 and 40 s (each up to half as long again, at random), network only
HUB_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=10),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_network_failure,
}
