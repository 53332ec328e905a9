"""``ModelManager``: which versions are loaded, and the lifecycle of each.

Follows upstream's ServerCore, FileSystemStoragePathSource,
AvailabilityPreservingPolicy and ServableStateMonitor
(``ts:model_servers/server_core.cc``, ``ts:sources/storage_path/``, ``ts:core/``):

- discovery: numeric children of ``base_path`` holding a ``saved_model.pb``;
- version policy (latest / all / specific) picks the aspired versions;
- new versions load before unaspired ones unload, so a model never goes dark;
- an unloading version leaves the serving map at once, then waits for the
  requests that hold it (``LoadedVersion.in_flight``) before it ends;
- a failed load is retried, then ends with its error and stays listed;
- version labels are checked against the states before a config is applied.

State is changed only on the event loop; a threading lock guards it so
``resolve`` and ``status`` may be called from any thread. TensorFlow work runs in
the manager's own thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, status_pb2
from tensorflow_serving.config import (
    file_system_storage_path_source_pb2,
    model_server_config_pb2,
)

from serving.errors import ServingError
from serving.model_config import read_model_server_config, validate_model_config_list
from serving.options import ServerOptions
from serving.servable import LoadedVersion

_log = logging.getLogger(__name__)

_Status = get_model_status_pb2.ModelVersionStatus
START, LOADING, AVAILABLE, UNLOADING, END = (
    _Status.START,
    _Status.LOADING,
    _Status.AVAILABLE,
    _Status.UNLOADING,
    _Status.END,
)
VersionPolicy: TypeAlias = (
    file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
)

# How long an unloading version waits for the requests still holding it.
DEFAULT_DRAIN_TIMEOUT_SECONDS = 30.0
_LOAD_THREADS = 4

_VERSION_DIR = re.compile(r"[+-]?[0-9]+")
_INT64 = range(-(2**63), 2**63)
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


# ---------------------------------------------------------------------------
# Discovery and version policies (pure functions).


class DiscoveryError(Exception):
    """The base path could not be listed; the model's versions are left as they are."""


def discover_versions(model_name: str, base_path: str) -> dict[int, str]:
    """Version -> directory for the numeric children of ``base_path`` holding a SavedModel.

    ``00000123`` is version 123; other names, and numeric directories without a
    ``saved_model.pb`` yet (still being copied), are ignored.
    """
    try:
        children = sorted(os.listdir(base_path))
    except OSError as exc:
        raise DiscoveryError(
            f"Could not find base path {base_path} for servable {model_name} with error {exc}"
        ) from exc
    found: dict[int, str] = {}
    for child in children:
        if not _VERSION_DIR.fullmatch(child) or int(child) not in _INT64:
            continue
        path = os.path.join(base_path, child)
        if any(os.path.isfile(os.path.join(path, name)) for name in _SAVED_MODEL_FILES):
            # Upstream: for duplicates ("1", "01") the later child wins.
            found[int(child)] = path
    return found


def aspired_versions(
    model_name: str, policy: VersionPolicy, found: Mapping[int, str]
) -> dict[int, str]:
    """The versions a policy wants served, out of those found on disk."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return dict(found)
    if choice == "specific":
        wanted = set(policy.specific.versions)
        for version in sorted(wanted - found.keys()):
            _log.warning(
                "Version %s of servable %s, which was requested to be served as a 'specific' "
                "version in the servable's version policy, was not found in the file system",
                version,
                model_name,
            )
        return {version: path for version, path in found.items() if version in wanted}
    # latest (also when no policy is set); upstream serves at least one version.
    count = max(policy.latest.num_versions, 1)
    return {version: found[version] for version in sorted(found, reverse=True)[:count]}


# ---------------------------------------------------------------------------
# Bookkeeping.


@dataclass
class _VersionState:
    """What GetModelStatus reports for one version (upstream's ServableStateMonitor)."""

    version: int
    path: str
    state: int
    error: ServingError | None = None
    seq: int = 0  # event number of the last change: tells a reload's events from older ones

    def to_proto(self) -> get_model_status_pb2.ModelVersionStatus:
        status = status_pb2.StatusProto()
        if self.error is not None:
            status.error_code = self.error.code.value[0]
            status.error_message = self.error.message
        return get_model_status_pb2.ModelVersionStatus(
            version=self.version, state=self.state, status=status
        )


@dataclass(eq=False)
class _Model:
    """One entry of the current config list."""

    config: model_server_config_pb2.ModelConfig
    aspired: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)  # ended in error and still aspired: no reload
    # Set when the model leaves the config or the manager closes: stops load retries.
    retired: asyncio.Event = field(default_factory=asyncio.Event)
    discovery_problem: str = ""
    sync_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return str(self.config.name)


def _copy_model_config(
    config: model_server_config_pb2.ModelConfig,
) -> model_server_config_pb2.ModelConfig:
    copied = model_server_config_pb2.ModelConfig()
    copied.CopyFrom(config)
    return copied


def _servable_id(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"  # upstream's ServableId::DebugString


def _unavailable_message(count_noun: str, entries: list[str]) -> str:
    # Upstream: "1 servable(s) did not become available: {{{name: m version: 1} due to
    # error: NOT_FOUND: ...}, }": every entry followed by ", ", all in braces.
    listed = "".join(f"{entry}, " for entry in entries)
    return f"{len(entries)} {count_noun} did not become available: {{{listed}}}"


class ModelManager:
    """Loads, serves and unloads model versions per a ``ModelServerConfig``."""

    def __init__(
        self,
        options: ServerOptions,
        *,
        drain_timeout_seconds: float = DEFAULT_DRAIN_TIMEOUT_SECONDS,
    ) -> None:
        self._options = options
        self._drain_timeout = drain_timeout_seconds
        # (version directory, "success" | "fail"), as TF's load_attempt_count.
        self.load_attempts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()  # guards the three maps below
        self._states: dict[str, dict[int, _VersionState]] = {}
        self._serving: dict[str, dict[int, LoadedVersion]] = {}
        self._labels: dict[str, dict[str, int]] | None = None  # None: not initialised yet
        self._seq = 0
        self._models: dict[str, _Model] = {}
        self._name_locks: dict[str, asyncio.Lock] = {}  # one sync or retire at a time per name
        self._config_lock = asyncio.Lock()  # one reload or config-file poll at a time
        self._changed = asyncio.Event()  # replaced after each state change
        self._executor = ThreadPoolExecutor(_LOAD_THREADS, thread_name_prefix="model-load")
        self._background: set[asyncio.Task[None]] = set()
        self._pollers: list[asyncio.Task[None]] = []
        self._fs_poller: asyncio.Task[None] | None = None
        self._file_config: model_server_config_pb2.ModelServerConfig | None = None
        self._started = False
        self._closed = False

    # -- the contract ------------------------------------------------------

    async def start(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Initial load; returns once every model is AVAILABLE or has ended.

        Raises ``ServingError`` when the config is invalid, a label points at an
        unavailable version, or a model failed to load (UNKNOWN,
        ``N servable(s) did not become available: ...``). Then starts polling.
        """
        if self._started:
            raise RuntimeError("ModelManager.start() was already called")
        self._started = True
        if self._options.model_config_file:
            self._file_config = model_server_config_pb2.ModelServerConfig()
            self._file_config.CopyFrom(config)
        kind = config.WhichOneof("config")
        if kind == "custom_model_config":
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                "ModelServer does not yet support custom model config.",
            )
        if kind is None:
            _log.info("Taking no action for empty config.")
        else:
            try:
                failures = await self._initial_load(config.model_config_list)
            except BaseException:
                await self._stop_pollers()
                raise
            if failures:
                await self._stop_pollers()
                raise ServingError(
                    grpc.StatusCode.UNKNOWN, _unavailable_message("servable(s)", failures)
                )
        self._start_config_file_poller()

    def resolve(self, spec: model_pb2.ModelSpec) -> LoadedVersion:
        """The loaded version a request's ModelSpec names (ServerCore's lookup)."""
        name = spec.name
        if not name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        with self._lock:
            version: int | None = None
            if choice == "version_label":
                version = self._label_version(name, spec.version_label)
            elif choice == "version":
                version = spec.version.value
            serving = self._serving.get(name, {})
            if version is None:
                if serving:
                    return serving[max(serving)]
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
                )
            loaded = serving.get(version)
            if loaded is None:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({name}, {version})",
                )
            return loaded

    def status(
        self, name: str, version: int | None
    ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """GetModelStatus: one version, or every version ever seen, highest first."""
        with self._lock:
            versions = self._states.get(name, {})
            if version is not None:
                state = versions.get(version)
                if state is None:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Could not find version {version} of model {name}",
                    )
                return [state.to_proto()]
            if not versions:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
                )
            return [versions[v].to_proto() for v in sorted(versions, reverse=True)]

    async def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """HandleReloadConfigRequest: the new list replaces the old one.

        Blocks until the newly named models are AVAILABLE (or raises UNKNOWN
        ``N model(s) did not become available: ...``).
        """
        if config.WhichOneof("config") != "model_config_list":
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported",
            )
        async with self._config_lock:
            await self._reload_locked(config)

    def model_names(self) -> list[str]:
        """The models of the current config, in config order."""
        return list(self._models)

    async def close(self) -> None:
        """Stop polling and retries, then unload every version."""
        if self._closed:
            return
        self._closed = True
        self._notify()  # wakes a reload waiting for versions that will never come
        await self._stop_pollers()
        models = list(self._models.values())
        for model in models:
            model.retired.set()
        await asyncio.gather(*(self._retire(model) for model in models))
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, True)

    # -- applying a config -------------------------------------------------

    async def _initial_load(
        self, config_list: model_server_config_pb2.ModelConfigList
    ) -> list[str]:
        async with self._config_lock:
            since = self._seq
            await self._apply(config_list)
            # Polling starts now: a model with no version yet is waited for.
            self._start_file_system_poller()
            return await self._wait_until_settled([m.name for m in config_list.config], since)

    async def _reload_locked(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """ServerCore::ReloadConfig for every config after the first."""
        kind = config.WhichOneof("config")
        if kind is None:
            _log.info("Taking no action for empty config.")
            return
        if kind != "model_config_list":
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "Cannot transition to requested config. It is only legal to transition "
                "from one ModelConfigList to another.",
            )
        before = set(self._models)
        since = self._seq
        await self._apply(config.model_config_list)
        new_names = [m.name for m in config.model_config_list.config if m.name not in before]
        failures = await self._wait_until_settled(new_names, since)
        if failures:
            raise ServingError(grpc.StatusCode.UNKNOWN, _unavailable_message("model(s)", failures))

    async def _apply(self, config_list: model_server_config_pb2.ModelConfigList) -> None:
        """Validate, swap labels, then converge every model on the new list."""
        validate_model_config_list(config_list)
        # Upstream checks and swaps labels before any version loads or unloads.
        labels = self._checked_labels(config_list)
        with self._lock:
            self._labels = labels
        wanted = {config.name: config for config in config_list.config}
        removed = [model for name, model in self._models.items() if name not in wanted]
        models: dict[str, _Model] = {}
        to_sync: list[_Model] = []
        for name, config in wanted.items():
            model = self._models.get(name)
            if model is None or model.config != config:
                model = model or _Model(_copy_model_config(config))
                model.config = _copy_model_config(config)
                to_sync.append(model)
            elif not self._name_lock(name).locked():
                to_sync.append(model)  # also rescans the disk (the only rescan when not polling)
            # else: unchanged and already converging (say, retrying a failed load for
            # minutes): the reload does not wait for it, as upstream's does not.
            models[name] = model
        self._models = models
        for model in removed:
            model.retired.set()
        await asyncio.gather(
            *(self._retire(model) for model in removed),
            *(self._sync(model) for model in to_sync),
        )

    def _checked_labels(
        self, config_list: model_server_config_pb2.ModelConfigList
    ) -> dict[str, dict[str, int]]:
        """The new label map, or FAILED_PRECONDITION (UpdateModelVersionLabelMap)."""
        current = self._labels or {}
        allow_flag = self._options.allow_version_labels_for_unavailable_models
        labels: dict[str, dict[str, int]] = {}
        for config in config_list.config:
            states = self._states.get(config.name, {})
            for label in sorted(config.version_labels):
                version = config.version_labels[label]
                # The flag lets a new label (or an unchanged one) point anywhere; moving an
                # existing label still needs the target to be available.
                existing = current.get(config.name, {}).get(label)
                allowed = allow_flag and existing in (None, version)
                state = states.get(version)
                if not allowed and (state is None or state.state != AVAILABLE):
                    raise ServingError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {config.name}, "
                        "which is not currently available for inference",
                    )
                labels.setdefault(config.name, {})[label] = version
        return labels

    def _label_version(self, name: str, label: str) -> int:
        # Caller holds self._lock.
        if self._labels is None:
            # Upstream appends the label with no separator.
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE, f"Model labels does not init yet.{label}"
            )
        version = self._labels.get(name, {}).get(label)
        if version is None:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
            )
        return version

    async def _wait_until_settled(self, names: Iterable[str], since: int) -> list[str]:
        """Wait until each model's highest settled version (after ``since``) is known.

        Returns upstream's entries for the models whose version ended instead of
        becoming available. A model with no version on disk is waited for while the
        file system is polled (upstream waits forever); without polling it fails.
        """
        names = list(names)
        while True:
            if self._closed:
                raise ServingError(grpc.StatusCode.CANCELLED, "The model manager was closed")
            failures: list[str] = []
            pending: list[str] = []
            for name in names:
                decisive = self._decisive_state(name, since)
                if decisive is None:
                    pending.append(name)
                elif decisive.state != AVAILABLE:
                    error = decisive.error
                    reason = f" due to error: {error.code.name}: {error.message}" if error else ""
                    failures.append(f"{{{_servable_id(name, decisive.version)}{reason}}}")
            if not pending:
                return failures
            if self._fs_poller is None:
                # Nothing will look at the disk again: fail now rather than wait forever.
                for name in pending:
                    model = self._models.get(name)
                    problem = model.discovery_problem if model else ""
                    failures.append(f"{{{{name: {name}}} due to error: NOT_FOUND: {problem}}}")
                return failures
            await self._changed.wait()

    def _decisive_state(self, name: str, since: int) -> _VersionState | None:
        """Upstream's wait on Latest(name): the highest version AVAILABLE or ended."""
        with self._lock:
            states = self._states.get(name, {})
            for version in sorted(states, reverse=True):
                state = states[version]
                if state.seq > since and state.state in (AVAILABLE, END):
                    return state
        return None

    # -- one model: discovery, loads, unloads ------------------------------

    def _name_lock(self, name: str) -> asyncio.Lock:
        return self._name_locks.setdefault(name, asyncio.Lock())

    async def _sync(self, model: _Model) -> None:
        """Converge one model on what its policy wants from the file system."""
        async with self._name_lock(model.name):
            if model.retired.is_set() or self._closed:
                return
            loop = asyncio.get_running_loop()
            try:
                found = await loop.run_in_executor(
                    self._executor, discover_versions, model.name, model.config.base_path
                )
            except DiscoveryError as exc:
                # Like upstream: a missing base path changes nothing already loaded.
                self._report_discovery_problem(model, str(exc))
                return
            if model.retired.is_set() or self._closed:
                return
            aspired = aspired_versions(model.name, model.config.model_version_policy, found)
            if not aspired:
                self._report_discovery_problem(
                    model,
                    f"No versions of servable {model.name} found under base path "
                    f"{model.config.base_path}. Did you forget to name your leaf directory "
                    "as a number (eg. '/1/')?",
                )
            else:
                model.discovery_problem = ""
            model.aspired = set(aspired)
            model.failed &= model.aspired
            to_load = [v for v in sorted(aspired, reverse=True) if self._needs_load(model, v)]
            for version in to_load:
                self._set_state(model.name, version, aspired[version], START)
            self._unload_unaspired(model)
            for version in to_load:
                if model.retired.is_set() or self._closed:
                    self._set_state(model.name, version, aspired[version], END)
                else:
                    await self._load(model, version, aspired[version])
            self._unload_unaspired(model)

    def _report_discovery_problem(self, model: _Model, problem: str) -> None:
        if problem != model.discovery_problem:
            _log.warning("%s", problem)
        model.discovery_problem = problem

    def _needs_load(self, model: _Model, version: int) -> bool:
        if version in model.failed:
            return False  # upstream does not retry a version that ended in error
        state = self._states.get(model.name, {}).get(version)
        # An UNLOADING version is picked up again by the next sync, once it has ended.
        return state is None or state.state == END

    async def _load(self, model: _Model, version: int, path: str) -> None:
        """Load one version, retrying as configured; ends in AVAILABLE or END."""
        loop = asyncio.get_running_loop()
        self._set_state(model.name, version, path, LOADING)
        attempts = 1 + max(self._options.max_num_load_retries, 0)
        interval = max(self._options.load_retry_interval_micros, 0) / 1_000_000
        error: ServingError | None = None
        for attempt in range(attempts):
            if attempt:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(model.retired.wait(), interval)
                if model.retired.is_set():
                    break  # upstream cancels retries of versions no longer wanted
            try:
                loaded = await loop.run_in_executor(
                    self._executor, LoadedVersion.load, model.name, version, path
                )
            except ServingError as exc:
                self.load_attempts[(path, "fail")] += 1
                error = exc
                _log.error(
                    "Loading servable %s (attempt %d of %d) failed: %s",
                    _servable_id(model.name, version),
                    attempt + 1,
                    attempts,
                    exc.message,
                )
                continue
            self.load_attempts[(path, "success")] += 1
            self._set_state(model.name, version, path, AVAILABLE, loaded=loaded)
            _log.info("Successfully loaded servable version %s", _servable_id(model.name, version))
            return
        model.failed.add(version)
        self._set_state(model.name, version, path, END, error=error)

    def _unload_unaspired(self, model: _Model) -> None:
        """AvailabilityPreservingPolicy: unload only what the model can spare."""
        with self._lock:
            serving = dict(self._serving.get(model.name, {}))
        unaspired = sorted(v for v in serving if v not in model.aspired)
        if not unaspired:
            return
        aspired_serving = any(v in serving for v in model.aspired)
        if model.aspired and not aspired_serving:
            # Nothing wanted is up yet (or it failed): keep the newest old version.
            unaspired = unaspired[:-1]
        for version in unaspired:
            self._begin_unload(model.name, serving[version])

    def _begin_unload(self, name: str, loaded: LoadedVersion) -> None:
        # Leaves the serving map now: new Specific requests get NOT_FOUND, Latest moves on.
        self._set_state(name, loaded.version, loaded.path, UNLOADING, unserve=True)
        self._spawn(self._finish_unload(name, loaded))

    async def _finish_unload(self, name: str, loaded: LoadedVersion) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._drain_timeout):
                await loaded.drained()
        except TimeoutError:
            _log.warning(
                "Unloading %s with %d request(s) still running after %.0f s",
                _servable_id(name, loaded.version),
                loaded.in_flight_count,
                self._drain_timeout,
            )
        await loop.run_in_executor(self._executor, loaded.release)
        self._set_state(name, loaded.version, loaded.path, END)
        _log.info("Done unloading servable version %s", _servable_id(name, loaded.version))

    async def _retire(self, model: _Model) -> None:
        """The model left the config (or the manager closes): unload all of it."""
        async with self._name_lock(model.name):
            model.aspired = set()
            self._unload_unaspired(model)

    def _set_state(
        self,
        name: str,
        version: int,
        path: str,
        state: int,
        *,
        error: ServingError | None = None,
        loaded: LoadedVersion | None = None,
        unserve: bool = False,
    ) -> None:
        """Record a state change; ``loaded`` enters and ``unserve`` leaves the serving map."""
        with self._lock:
            self._seq += 1
            versions = self._states.setdefault(name, {})
            record = versions.get(version)
            if record is None:
                record = versions[version] = _VersionState(version, path, state)
            record.path, record.state, record.error, record.seq = path, state, error, self._seq
            if loaded is not None:
                self._serving.setdefault(name, {})[version] = loaded
            if unserve:
                self._serving.get(name, {}).pop(version, None)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- polling -------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("Model manager task failed", exc_info=task.exception())

    def _start_file_system_poller(self) -> None:
        interval = self._options.file_system_poll_wait_seconds
        if interval > 0 and not self._closed:
            self._fs_poller = asyncio.create_task(self._poll_file_system(interval))
            self._pollers.append(self._fs_poller)

    def _start_config_file_poller(self) -> None:
        path = self._options.model_config_file
        interval = self._options.model_config_file_poll_wait_seconds
        if path and interval > 0 and not self._closed:
            self._pollers.append(asyncio.create_task(self._poll_config_file(path, interval)))

    async def _stop_pollers(self) -> None:
        pollers, self._pollers, self._fs_poller = self._pollers, [], None
        for poller in pollers:
            poller.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)

    async def _poll_file_system(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for model in list(self._models.values()):
                # A model still busy (a slow load, retries) is looked at next time.
                if model.sync_task is None or model.sync_task.done():
                    model.sync_task = self._spawn(self._sync(model))

    async def _poll_config_file(self, path: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                config = await asyncio.to_thread(read_model_server_config, path)
            except ServingError as exc:
                _log.error("Failed to read ModelServerConfig file: %s", exc.message)
                continue
            if config == self._file_config:
                continue  # upstream reloads on every poll; an unchanged file is a no-op
            self._file_config = config
            try:
                async with self._config_lock:
                    await self._reload_locked(config)
            except ServingError as exc:
                _log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc.message)
