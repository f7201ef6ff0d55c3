"""The pin: `deployment.model_version` in config.yaml, the version inference serves.

`set_pin` is how anything (the `promote`/`rollback` commands, the retrain worker) changes it:
  1. the version name is checked, the version must be complete in the registry and its model.onnx must
     match the sha256 in its metadata (a corrupt model is refused here, before any service sees it);
  2. only the value of `model_version:` under `deployment:` changes; comments, order, quoting and
     layout of the rest of the file are kept (a line edit, checked by parsing the result; ruamel.yaml
     round trip as the fallback for unusual layouts);
  3. the new text must load with `shared.config.load_settings`, else nothing is written;
  4. the file is replaced atomically (temp file, fsync, rename), so a service polling it sees the old
     or the new file, never a part; concurrent pinners are serialised by a lock on the folder;
  5. a `promote` (or `rollback`) row goes to deployment_log.csv.

`read_pin` and `pinned_version` read the file as it is now (not the settings loaded at start-up): the monitor
and the retrain gate ask which version serves through `pinned_version`.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from shared import deploylog
from shared.atomic import atomic_write_text
from shared.config import Settings, load_settings
from shared.errors import ConfigError, NotFoundError
from shared.paths import Paths, check_model_version
from shared.registry import Registry

_SECTION_RE = re.compile(r"^deployment:[ \t]*(#.*)?\r?\n?$")
_VALUE_RE = re.compile(
    r"^(?P<pre>(?P<indent>[ \t]+)model_version:[ \t]*)(?P<q>[\"']?)(?P<val>[^\"'#\s]*)(?P=q)"
    r"(?P<post>[ \t]*(?:#.*)?)(?P<eol>\r?\n?)$"
)


def read_pin(config_path: str | os.PathLike) -> str:
    """The pinned model version as written in the file (not validated beyond being present)."""
    path = Path(config_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the pin: {e}") from e
    try:
        value = raw["deployment"]["model_version"]
    except (TypeError, KeyError) as e:
        raise ConfigError(f"{path}: deployment.model_version: required key is missing") from e
    if not isinstance(value, str):
        raise ConfigError(f"{path}: deployment.model_version: must be a string like v3, got {value!r}")
    return value


def pinned_version(settings: Settings) -> str:
    """The version pinned in config.yaml now (the file, not the settings loaded at start-up)."""
    return check_model_version(read_pin(settings.config_path))


def default_actor() -> str:
    return f"pin-{socket.gethostname()}-{os.getpid()}"


@contextmanager
def _folder_lock(config_path: Path) -> Iterator[None]:
    """Serialise read-modify-write of config.yaml (a lock on its folder: the file itself is replaced)."""
    fd = os.open(config_path.resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _line_edit(text: str, version: str) -> str | None:
    """Replace the value of `model_version:` directly under a top-level `deployment:`; None if not found once."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _SECTION_RE.match(line)), None)
    if start is None:
        return None
    child_indent = None
    hits = []
    for i in range(start + 1, len(lines)):
        line = lines[i]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if not indent:
            break  # next top-level key: the section ended
        if child_indent is None:
            child_indent = indent
        m = _VALUE_RE.match(line)
        if m and m.group("indent") == child_indent:
            hits.append((i, m))
    if len(hits) != 1:
        return None
    i, m = hits[0]
    lines[i] = f"{m.group('pre')}{m.group('q')}{version}{m.group('q')}{m.group('post')}{m.group('eol')}"
    return "".join(lines)


def _ruamel_edit(text: str, version: str) -> str:
    ry = YAML()  # round trip: comments and order survive
    ry.preserve_quotes = True
    data = ry.load(text)
    data["deployment"]["model_version"] = version
    out = io.StringIO()
    ry.dump(data, out)
    return out.getvalue()


def _expected(text: str, version: str) -> object:
    data = yaml.safe_load(text)
    data["deployment"]["model_version"] = version
    return data


def edit_pin_text(text: str, version: str, *, where: str = "config.yaml") -> str:
    """The file's text with only the pin changed; ConfigError if that cannot be done safely."""
    check_model_version(version)
    try:
        want = _expected(text, version)
    except (yaml.YAMLError, TypeError, KeyError) as e:
        raise ConfigError(f"{where}: cannot locate deployment.model_version: {e}") from e
    candidate = _line_edit(text, version)
    if candidate is None or yaml.safe_load(candidate) != want:
        candidate = _ruamel_edit(text, version)
        if yaml.safe_load(candidate) != want:
            raise ConfigError(f"{where}: could not change deployment.model_version without touching anything else")
    return candidate


def _check_loads(config_path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{config_path.name}.pin-", suffix=".yaml", dir=config_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            load_settings(tmp)
        except ConfigError as e:
            raise ConfigError(f"{config_path}: refusing to write a config that does not load: {e}") from e
    finally:
        os.unlink(tmp)


def check_servable(paths: Paths, version: str) -> dict:
    """The version's metadata if it is complete in the registry and its model.onnx matches its sha256."""
    check_model_version(version)
    registry = Registry(paths=paths)
    if version not in registry.versions():
        folder = paths.model_dir(version)
        missing = [f.name for f in (paths.model_file(version), paths.metadata_file(version)) if not f.is_file()]
        if folder.is_dir() and missing:
            raise NotFoundError(f"model version {version} is incomplete: {', '.join(missing)} missing in {folder}")
        raise NotFoundError(f"No such complete model version: {version} in {paths.models_dir}")
    _, metadata = registry.load_verified(version)
    return metadata


def set_pin(
    config_path: str | os.PathLike,
    version: str,
    *,
    paths: Paths,
    event: str = "promote",
    actor: str | None = None,
    detail: str = "",
) -> str:
    """Pin `version` (validated, comments kept, atomic); log a `promote`/`rollback` row. Returns the old pin."""
    if event not in ("promote", "rollback"):
        raise ValueError(f"set_pin event must be promote or rollback, got {event!r}")
    config_path = Path(config_path)
    metadata = check_servable(paths, version)
    with _folder_lock(config_path):
        text = config_path.read_text(encoding="utf-8")
        previous = read_pin(config_path)
        if previous == version:
            return previous
        new_text = edit_pin_text(text, version, where=str(config_path))
        _check_loads(config_path, new_text)
        atomic_write_text(config_path, new_text)
        deploylog.append_event(
            paths,
            event=event,
            version=version,
            previous_version=previous,
            metadata=metadata,
            instance_id=actor or default_actor(),
            detail=detail or f"pin set in {config_path}",
        )
    return previous


def rollback(config_path: str | os.PathLike, *, paths: Paths, actor: str | None = None) -> tuple[str, str]:
    """Pin the version that served before the current pin (from deployment_log). Returns (from, to)."""
    current = read_pin(config_path)
    target = deploylog.rollback_target(deploylog.read_rows(paths), current)
    if target is None:
        raise NotFoundError(f"nothing to roll back to: no version served before {current} in {paths.deployment_log}")
    set_pin(config_path, target, paths=paths, event="rollback", actor=actor, detail=f"rollback from {current}")
    return current, target
