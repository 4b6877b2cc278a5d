"""Where a campaign's runs execute: this process, local worker processes, or a Ray cluster.

A campaign (``check`` on several worlds, ``sweep``, ``ablate``, ``conform``, ``conform
--mutations``, ``scenarios``) is a list of independent runs; an :class:`Executor` maps a
function over them and returns the results in the order of the runs, so the output does not
depend on where or in which order they ran. ``--executor`` chooses one:

* ``local`` (the default): ``--jobs`` worker processes on this machine (one: this process);
* ``ray``: a Ray instance started on the spot on this machine, stopped at the end;
* ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT`` (the head node's GCS address): an existing
  Ray cluster; this machine's ``vpmu`` package is shipped to it (Ray's ``py_modules``), so the
  cluster runs exactly the code the driver runs.

Ray is an optional extra (``pip install 'vpmu[ray]'``); nothing else needs it.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

from vpmu.errors import VpmuError

T = TypeVar("T")
R = TypeVar("R")

INSTALL_HINT = "pip install 'vpmu[ray]' (from a clone: pip install -e '.[ray]')"
ALLOWED = "local, ray (a Ray started on this machine), ray://HOST:PORT or HOST:PORT (an existing Ray cluster)"
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:(\d{1,5})$")


class Executor(Protocol):
    """Runs a function over a campaign's runs; results in the order of the runs."""

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: Callable[[R], None] | None = None) -> list[R]:
        """``[fn(x) for x in items]``, wherever it runs; ``on_result`` sees each result in order."""
        ...

    def describe(self) -> str:
        """Where the runs execute, for a summary line ("2 local processes", "Ray (local)")."""
        ...

    def close(self) -> None:
        """Release what the executor started (worker processes, a local Ray)."""
        ...


class LocalExecutor:
    """``jobs`` worker processes on this machine; one job (or one run) runs in this process."""

    def __init__(self, jobs: int = 0) -> None:
        if jobs < 0:
            raise VpmuError(f"--jobs = {jobs} is not allowed; allowed: an integer >= 1 (0: one per core)")
        self.jobs = jobs or os.cpu_count() or 1

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: Callable[[R], None] | None = None) -> list[R]:
        out: list[R] = []
        if self.jobs <= 1 or len(items) <= 1 or not _picklable(fn, items[0]):
            for x in items:
                out.append(fn(x))
                if on_result is not None:
                    on_result(out[-1])
            return out
        # One run at a time per worker: their costs differ by orders of magnitude.
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(items))) as pool:
            for r in pool.map(fn, items, chunksize=1):
                out.append(r)
                if on_result is not None:
                    on_result(r)
        return out

    def describe(self) -> str:
        return f"{self.jobs} local process{'es' * (self.jobs != 1)}"

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs as Ray tasks (one task per run), on a local Ray or an existing cluster."""

    def __init__(self, address: str | None = None, cpus: int = 0) -> None:
        ray = self.ray = import_ray()
        self.address = address
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
            if address is None:
                kwargs["address"] = "local"  # a new Ray, even where `ray start` left one running
                if cpus:
                    kwargs["num_cpus"] = cpus
            else:
                import vpmu

                _reachable(address)
                kwargs["address"] = address
                kwargs["runtime_env"] = {"py_modules": [vpmu]}
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise VpmuError(f"--executor {address or 'ray'}: cannot start or reach Ray: {e}") from None
            self.started = True
        self._tasks: dict[Callable[..., Any], Any] = {}

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: Callable[[R], None] | None = None) -> list[R]:
        task = self._tasks.get(fn)
        if task is None:
            task = self._tasks[fn] = self.ray.remote(fn)
        refs = [task.remote(x) for x in items]
        out: list[R] = []
        for ref in refs:
            out.append(self.get(ref))
            if on_result is not None:
                on_result(out[-1])
        return out

    def get(self, ref: Any) -> Any:
        return ray_get(self.ray, ref)

    def partitions(self, spec: Any, count: int, fingerprint: bool) -> Any:
        """The actors of one partitioned search (vpmu.check.distributed)."""
        from vpmu.check.distributed import RayGroup

        return RayGroup(self.ray, spec, count, fingerprint)

    def describe(self) -> str:
        return f"Ray at {self.address}" if self.address else "Ray (local)"

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def ray_get(ray: Any, refs: Any) -> Any:
    """``ray.get``, re-raising a user error a task or actor raised as that error (exit 2, one line)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, VpmuError):
            raise VpmuError(str(cause)) from None
        raise


def import_ray() -> Any:
    """The ``ray`` module, or a user error that says how to install it."""
    try:
        import ray  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise VpmuError(f"--executor ray needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


def parse_executor(spec: str) -> tuple[str, str | None]:
    """``("local", None)``, ``("ray", None)`` or ``("ray", address)``; a clear error otherwise."""
    if spec == "local":
        return "local", None
    if spec == "ray":
        return "ray", None
    m = _ADDRESS.match(spec)
    if m and 0 < int(m.group(2)) < 65536:
        return "ray", spec
    raise VpmuError(f"--executor = {spec!r} is not allowed; allowed: {ALLOWED}")


def make_executor(spec: str | None, jobs: int = 0) -> LocalExecutor | RayExecutor:
    """The executor ``--executor SPEC --jobs N`` names (default: local processes)."""
    kind, address = parse_executor(spec or "local")
    if kind == "local":
        return LocalExecutor(jobs)
    return RayExecutor(address, cpus=jobs)


def _reachable(address: str) -> None:
    """Fail fast on an address nothing listens at (Ray itself retries for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise VpmuError(f"--executor {address}: cannot reach a Ray cluster there: {e}") from None


def _picklable(fn: Any, item: Any) -> bool:
    """Runs holding what pickle cannot carry (a design file's lambdas) stay in this process."""
    try:
        pickle.dumps((fn, item))
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True
