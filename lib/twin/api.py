"""Public API of the twin: start a rehearsal cluster in a background thread or in the foreground.

Example (tests)::

    from twin.api import Twin
    with Twin(tmp_path / "twin", fixture="minicloud") as t:
        subprocess.run(["kubectl", "--kubeconfig", t.kubeconfig, "get", "pods", "-A"])

Example (CLI)::

    runbook twin up --fixture minicloud --state-dir .twin

Once everything is serving, ``<state_dir>/kubeconfig`` and ``<state_dir>/params.yaml``
exist, and ``<state_dir>/ready`` is written last.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .clock import DEFAULT_SPEED, Clock
from .errors import TwinInputError, TwinStartError
from .faults import Faults
from .runtime import Runtime

log = logging.getLogger("twin")


def parse_scale(text: str) -> tuple[int, int]:
    """Parse ``nodes=N,pods=M``.

    >>> parse_scale("nodes=3,pods=200")
    (3, 200)
    """
    parts = dict(p.split("=", 1) for p in text.replace(" ", "").split(",") if p)
    try:
        return int(parts["nodes"]), int(parts["pods"])
    except (KeyError, ValueError) as e:
        raise TwinInputError(f"--scale must look like nodes=N,pods=M, got {text!r}") from e


def _build_components(rt: Runtime) -> list[Any]:
    """The twin's components, in start order."""
    from .admin import AdminEndpoint
    from .apiserver import APIServer
    from .chartrepo import ChartRepo
    from .controllers import WorkloadControllers
    from .controllers.addons import AddonControllers
    from .controllers.cilium import CiliumModel
    from .controllers.network import NetworkModel
    from .ingress import IngressEndpoint
    from .node import NodesComponent
    from .ssh import SSHServers

    # network and cilium read rt.component("workloads") when they start: keep them after it
    return [NodesComponent(), APIServer(), WorkloadControllers(), NetworkModel(), CiliumModel(),
            AddonControllers(), SSHServers(), ChartRepo(), IngressEndpoint(), AdminEndpoint()]


class Twin:
    """A running rehearsal cluster (context manager).

    Args:
        state_dir: where the twin writes its kubeconfig, keys, node roots and params.yaml.
        fixture: "minicloud" or a path to a fixture YAML (ignored when ``scale`` is set).
        scale: ``(nodes, pods)`` to generate a cluster of the same shape at any size.
        snapshot: a cluster snapshot archive (``runbook snapshot``) to rebuild instead
            (see :mod:`twin.snapshot_twin`).
        speed: clock speed factor (cluster seconds -> wall seconds).
        cilium_chart: path of an official cilium chart archive to serve (else a stand-in).
        faults: fault switches to set at start, e.g. ``{"velero_partially_failed": True}``.
    """

    def __init__(self, state_dir: str | os.PathLike, *, fixture: str = "minicloud",
                 scale: tuple[int, int] | None = None, speed: float | None = None,
                 cilium_chart: str | os.PathLike | None = None,
                 faults: dict[str, Any] | None = None,
                 components: Callable[[Runtime], list[Any]] | None = None,
                 snapshot: str | os.PathLike | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.fixture_name = fixture
        self.scale = scale
        self.snapshot = Path(snapshot).resolve() if snapshot else None
        self.speed = speed or DEFAULT_SPEED
        self.cilium_chart = Path(cilium_chart).resolve() if cilium_chart else None
        self.initial_faults = dict(faults or {})
        self._components = components or _build_components
        self.rt: Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.startup_seconds: float | None = None

    # -- paths ---------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def params_path(self) -> Path:
        return self.state_dir / "params.yaml"

    @property
    def endpoints(self) -> dict[str, Any]:
        assert self.rt is not None, "twin not started"
        return self.rt.endpoints

    # -- lifecycle -------------------------------------------------------------------
    def _prepare(self) -> Runtime:
        from . import fixtures
        from .store import Store, builtin_types

        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        (self.state_dir / "ready").unlink(missing_ok=True)
        return self._build_runtime(fixtures, Store, builtin_types)

    def _build_runtime(self, fixtures: Any, Store: Any, builtin_types: Any) -> Runtime:
        options: dict[str, Any] = {}
        if self.scale:
            fx = fixtures.generate(*self.scale)
        elif self.snapshot is not None:
            from .snapshot_twin import load_for_twin  # noqa: PLC0415

            fx, options = load_for_twin(self.snapshot)
        else:
            fx = fixtures.load(self.fixture_name)
        faults = Faults()
        for k, v in self.initial_faults.items():
            faults.set(k, v)
        rt = Runtime(state_dir=self.state_dir, clock=Clock(self.speed), faults=faults, fixture=fx)
        rt.options.update(options)
        rt.store = Store()
        for t in builtin_types():
            rt.store.register(t)
        # the fixture is the twin's own (fresh): the store keeps its objects, no copies
        rt.options["load_counts"] = fixtures.load_into(rt.store, fx, adopt=True)
        if self.cilium_chart:
            rt.options["cilium_chart"] = str(self.cilium_chart)
        return rt

    async def _amain(self, started: threading.Event, errors: list[BaseException]) -> None:
        try:
            # Building the cluster and the components' indexes is bulk work on plain,
            # acyclic data: with the cyclic GC on, every threshold crossing rescans
            # everything built so far (seconds at 50k pods). The result lives as long
            # as the twin: frozen out of future scans once everything has started.
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                rt = self._prepare()
                self.rt = rt
                await rt.start_all(self._components(rt))
            finally:
                gc.freeze()
                if was_enabled:
                    gc.enable()
            from .rehearsal_params import write_params  # noqa: PLC0415
            write_params(rt)
            if rt.options.get("snapshot"):
                from .snapshot_twin import write_assumptions  # noqa: PLC0415

                write_assumptions(rt)
            (self.state_dir / "ready").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
        except BaseException as e:  # report start failures to the caller's thread
            errors.append(e)
            started.set()
            if self.rt is not None:
                await self.rt.stop_all()
            return
        started.set()
        try:
            while not self._stopped.is_set():
                await asyncio.sleep(0.05)
        finally:
            await rt.stop_all()

    def start(self, timeout: float = 120.0) -> "Twin":
        """Start in a background thread; returns once ``ready`` is written.

        Raises:
            TwinStartError: a component failed to start (``cause`` is its error; a bad
                chart archive is a :class:`~twin.errors.TwinInputError` there).
            TimeoutError: nothing was ready within ``timeout`` seconds.
        """
        started = threading.Event()
        errors: list[BaseException] = []
        t0 = time.monotonic()

        def runner() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._amain(started, errors))
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=runner, name="twin", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            self.stop()
            raise TimeoutError(f"twin did not start within {timeout:.0f}s")
        if errors:
            self._thread.join(10)
            raise TwinStartError(f"twin failed to start: {errors[0]!r}", cause=errors[0]) from errors[0]
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def __enter__(self) -> "Twin":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- access from other threads ------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 30.0, **kwargs: Any) -> Any:
        """Run ``fn(*args)`` on the twin's loop thread (the store is not thread-safe)."""
        assert self._loop is not None

        async def wrapper() -> Any:
            res = fn(*args, **kwargs)
            if asyncio.iscoroutine(res):
                res = await res
            return res

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def set_fault(self, name: str, value: Any) -> None:
        """Set a fault switch while the twin runs."""
        self.call(lambda: self.rt.faults.set(name, value))  # type: ignore[union-attr]

    def describe(self) -> list[str]:
        assert self.rt is not None
        return [f"{c.name}: {c.describe()}" for c in self.rt.components]


def serve_forever(args: Any) -> int:
    """``runbook twin up``: run a twin in the foreground until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scale = parse_scale(args.scale) if getattr(args, "scale", None) else None
    twin = Twin(args.state_dir, fixture=args.fixture, scale=scale,
                speed=getattr(args, "speed", None), cilium_chart=getattr(args, "cilium_chart", None),
                snapshot=getattr(args, "from_snapshot", None))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        print(f"\nreceived {signal.Signals(signum).name}, stopping the twin", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting twin in {twin.state_dir} ...", flush=True)
    twin.start()
    counts = twin.rt.options.get("load_counts", {}) if twin.rt else {}
    print(f"twin ready in {twin.startup_seconds:.1f}s", flush=True)
    if counts:
        print("  loaded: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), flush=True)
    for line in twin.describe():
        print("  " + line, flush=True)
    for line in (twin.rt.options.get("assumption_lines") or []) if twin.rt else []:
        print(f"  assumed: {line}", flush=True)
    print(f"  kubeconfig: {twin.kubeconfig}\n  params:     {twin.params_path}", flush=True)
    print(f"  export KUBECONFIG={twin.kubeconfig}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        twin.stop()
        print("twin stopped", flush=True)
    return 0
