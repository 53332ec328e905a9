"""``bridge serving label``: move a version label the way TF Serving documents.

A label may only point at an AVAILABLE version, so the move takes two reloads:

1. a config whose version policy loads the new version next to the ones that
   serve now; wait (polling GetModelStatus) until the new version is AVAILABLE;
2. the same config with the label pointing at the new version.

Nothing unloads on the way (the version the label left stays loaded unless
``--unload-unlabelled``), so requests to the label never fail. If a step fails
or the command is interrupted (Ctrl-C), the previous config is sent back, so the
server again runs what models.config says. Only after the server took the new
config is models.config rewritten (temporary file + rename), so the file stays
the source of truth for labels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bridge.domain import Target
from bridge.errors import DeadlineExceededError, ModelCallError, ServerUnavailableError
from bridge.ops.disk import check_writable, readable_base, versions_on_disk, write_atomically
from bridge.ops.errors import CommandError, UsageError
from bridge.ops.models_config import (
    ModelsConfigError,
    ModelServerConfig,
    find_model,
    parse_models_config,
    render_models_config,
    specific_versions,
    unlabelled_versions,
    with_label,
    with_version_loaded,
    without_unlabelled,
)
from bridge.serving.grpc_client import GrpcModelClient
from bridge.serving.model_service import ModelServiceClient, VersionStatus
from bridge.serving.tls import ServingTls

POLL_INTERVAL_S = 0.1


@dataclass(frozen=True, slots=True)
class LabelMove:
    model: str
    label: str
    version: int
    models_config: Path
    grpc_target: str
    timeout_s: float
    unload_unlabelled: bool = False
    max_message_bytes: int = 16 * 1024 * 1024
    tls: ServingTls | None = None


class StatusSource(Protocol):
    """What polling needs from ``ModelServiceClient`` (a seam for the unit tests)."""

    @property
    def target(self) -> str: ...

    async def status(self, model: str) -> list[VersionStatus]: ...


def read_models_config(path: Path) -> tuple[str, ModelServerConfig]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read models.config {path}: {exc}") from exc
    try:
        return text, parse_models_config(text)
    except ModelsConfigError as exc:
        raise UsageError(f"cannot use models.config {path}: {exc}") from exc


async def model_status(service: StatusSource, model: str) -> list[VersionStatus]:
    try:
        return await service.status(model)
    except ServerUnavailableError as exc:
        raise CommandError(
            f"cannot reach the model server at {service.target}: {exc.message}"
        ) from exc
    except ModelCallError as exc:
        raise CommandError(f"model server {service.target}: {_said(exc)}") from exc


def _said(exc: ModelCallError) -> str:
    """The server's words with their status, as TF Serving prints them."""
    return f"{exc.status}: {exc.message}"


def _status_of(statuses: list[VersionStatus], version: int) -> VersionStatus | None:
    return next((s for s in statuses if s.version == version), None)


async def wait_until_available(
    service: StatusSource,
    model: str,
    version: int,
    timeout_s: float,
    before: VersionStatus | None,
) -> float:
    """Poll GetModelStatus until ``version`` is AVAILABLE; returns the seconds it took.

    A version that ends with an error fails at once, unless that END is the one
    already reported before the reload (an older attempt) and nothing changed
    since. Raises CommandError with the server's message, or on timeout.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    changed = False
    while True:
        current = _status_of(await model_status(service, model), version)
        changed = changed or current != before
        if current is not None and current.available:
            return time.monotonic() - started
        if current is not None and current.failed and changed:
            raise CommandError(
                f"version {version} of model {model} failed to load: {current.error}"
            )
        if time.monotonic() >= deadline:
            if current is None:
                state = "not known to the server"
            elif current.failed:
                state = f"END with {current.error}"
            else:
                state = current.state
            raise CommandError(
                f"version {version} of model {model} is not AVAILABLE after {timeout_s:g} s "
                f"(it is {state})"
            )
        await asyncio.sleep(POLL_INTERVAL_S)


async def _verify_label(client: GrpcModelClient, move: LabelMove) -> int:
    """The server resolves the label to the new version, or CommandError."""
    try:
        # GetModelMetadata echoes the version a label resolves to; no other API reads it.
        served = await client.served_version(Target(move.model, label=move.label))
    except ModelCallError as exc:
        raise CommandError(
            f"the server cannot resolve {move.model}@{move.label}: {_said(exc)}"
        ) from exc
    if served != move.version:
        raise CommandError(
            f"the server took the config but resolves {move.model}@{move.label} to "
            f"version {served}, not {move.version}"
        )
    return move.version


async def move_label(move: LabelMove, say: Callable[[str], None]) -> None:
    """The whole move; raises CommandError (refused/failed) or UsageError."""
    model, label, version = move.model, move.label, move.version
    original_text, original = read_models_config(move.models_config)
    try:
        entry = find_model(original, model)
    except ModelsConfigError as exc:
        raise CommandError(f"{exc} ({move.models_config})") from exc
    previous = entry.version_labels.get(label)

    base = readable_base(entry.base_path)
    if base is None:
        say(
            f"note: base_path {entry.base_path} is not readable here; not checking that "
            f"version {version} exists on disk (the server will)"
        )
    elif version not in versions_on_disk(base):
        raise CommandError(
            f"version {version} of model {model} does not exist on disk under {entry.base_path}"
        )
    try:
        check_writable(move.models_config)
    except OSError as exc:
        raise CommandError(f"cannot rewrite {move.models_config}: {exc}") from exc

    client = GrpcModelClient(move.grpc_target, move.timeout_s, move.max_message_bytes, move.tls)
    service = client.model_service
    try:
        statuses = await model_status(service, model)
        available = {s.version for s in statuses if s.available}
        step1 = with_version_loaded(original, model, version, available)
        if not step1.changed and previous == version and version in available:
            say(f"{model}: label {label} already points at version {version}; nothing to do")
            return
        if step1.note:
            say(f"note: {step1.note}")
        applied = False  # the server runs something other than the file's config
        try:
            if step1.changed:
                loaded = specific_versions(find_model(step1.config, model)) or []
                say(
                    f"step 1/2: loading version {version} of {model} "
                    f"(policy specific {{{', '.join(str(v) for v in loaded)}}})"
                )
                applied = True
                await _reload(service, step1.config, f"the config that loads version {version}")
            else:
                say(f"step 1/2: version {version} of {model} is already in the policy")
            took = await wait_until_available(
                service, model, version, move.timeout_s, _status_of(statuses, version)
            )
            say(f"          version {version} is AVAILABLE ({took:.1f} s)")

            step2 = with_label(step1.config, model, label, version)
            say(f"step 2/2: pointing {label} at version {version}")
            applied = True
            await _reload(service, step2, f"the config that points {label} at {version}")
            final = step2
            dropped: list[int] = []
            if move.unload_unlabelled:
                final, dropped = without_unlabelled(step2, model)
                if dropped:
                    say(f"unloading versions without a label: {_versions(dropped)}")
                    await _reload(service, final, "the config without unlabelled versions")

            served = await _verify_label(client, move)
            _write_back(move.models_config, original_text, final)
        except (CommandError, OSError) as exc:
            problem = exc.message if isinstance(exc, CommandError) else str(exc)
            if applied:
                problem += await _restore(service, original, move.models_config)
            else:
                problem += (
                    f"\nnothing was changed on the server; {move.models_config} was not written"
                )
            raise CommandError(problem) from exc
        except asyncio.CancelledError:
            # Ctrl-C (asyncio.run cancels the command): the server must not be left
            # between the two reloads, running a config the file does not describe.
            if applied:
                say("interrupted: sending the previous config back to the server")
                say((await _restore(service, original, move.models_config)).strip())
            raise
    finally:
        await client.aclose()

    say(f"{model}: label {label} moved from {_version_text(previous)} to version {version}")
    say(f"  the server resolves {model}@{label} to version {served}")
    final_entry = find_model(final, model)
    loaded = specific_versions(final_entry) or []
    line = f"  versions loaded: {_versions(loaded)}"
    unlabelled = unlabelled_versions(final_entry)
    if unlabelled:
        line += (
            f" (version {unlabelled[0]} has no label and stays loaded"
            if len(unlabelled) == 1
            else f" (versions {_versions(unlabelled)} have no label and stay loaded"
        ) + "; --unload-unlabelled unloads such versions)"
    elif dropped:
        line += f" (unloaded: {_versions(dropped)})"
    say(line)
    rendered = render_models_config(final, original_text)
    said = []
    if rendered.kept_comments:
        said.append("the comment block at its top is kept")
    if rendered.dropped_comments:
        said.append(f"{rendered.dropped_comments} comment line(s) inside the config were lost")
    say(f"wrote {move.models_config}" + (f" ({'; '.join(said)})" if said else ""))


async def _reload(service: ModelServiceClient, config: ModelServerConfig, what: str) -> None:
    try:
        await service.reload(config)
    except DeadlineExceededError as exc:
        raise CommandError(
            f"the server did not finish reloading {what} within {service.timeout_s:g} s "
            f"({_said(exc)})"
        ) from exc
    except ServerUnavailableError as exc:
        raise CommandError(
            f"cannot reach the model server at {service.target} to reload {what}: {_said(exc)}"
        ) from exc
    except ModelCallError as exc:
        raise CommandError(f"the server refused {what}: {_said(exc)}") from exc


async def _restore(service: ModelServiceClient, original: ModelServerConfig, path: Path) -> str:
    try:
        await service.reload(original)
    except ModelCallError as exc:
        return (
            f"\ncould not restore the previous config ({_said(exc)}); {path} is unchanged and the "
            "server may run a different config: reload it by hand"
        )
    return f"\nrestored the previous config on the server; {path} was not written"


def _write_back(path: Path, original_text: str, config: ModelServerConfig) -> None:
    """Rewrite models.config unless someone else changed it since it was read."""
    try:
        current = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {path} again before writing it: {exc}") from exc
    if current != original_text:
        raise CommandError(f"{path} changed while the label moved; not overwriting it")
    write_atomically(path, render_models_config(config, original_text).text)


def _versions(versions: list[int]) -> str:
    return ", ".join(str(v) for v in versions)


def _version_text(version: int | None) -> str:
    return "no version (new label)" if version is None else f"version {version}"
