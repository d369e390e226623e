"""Run a benchmark variant in a fresh interpreter, so its time and peak memory are its own."""

from __future__ import annotations

import multiprocessing as mp
import resource


def _child(target, kwargs, queue):
    result = target(**kwargs)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def isolated(target, **kwargs) -> dict:
    """``target(**kwargs)`` (a dict) run in a spawned process, with that process's peak RSS added."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, kwargs, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result
