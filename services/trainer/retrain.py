"""One retrain job: message -> new data version with labelled production rows -> candidate -> gate ->
register (once per message id) -> promote when the gate says so and config allows.

shared.labelled (monitor), shared.gate (monitor) and shared.pin (inference) are other parts' modules,
imported when a job runs; until they exist a job trains on config's data version without a gate.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

import pandas as pd

from services.trainer.train import Candidate, train_candidate
from shared.atomic import locked, sha256_bytes
from shared.config import Settings
from shared.datastore import DataStore, table_bytes
from shared.errors import IntegrityError
from shared.features import LABEL, RAW_COLUMNS
from shared.paths import LABELLED_SNAPSHOT, Paths, check_data_version
from shared.registry import Registry
from shared.schemas import RetrainMessage

log = logging.getLogger(__name__)
PRODUCER = "services.trainer.retrain"
RETRAIN_SUFFIX = "retrain"
GATE_WINDOW = "gate_window.csv"
WRITE_ATTEMPTS = 3


def optional_module(name: str) -> ModuleType | None:
    """Another part's module, or None while it is not there yet."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        log.warning("%s is not available: continuing without it", name)
        return None


def message_trigger(message: RetrainMessage) -> dict:
    return {
        "kind": "message",
        "message_id": message.id,
        "reason": message.reason,
        "created_at": message.created_at,
        "evidence": message.evidence,
        "include_production": message.include_production,
        "data_version": message.data_version,
    }


def load_labelled(paths: Paths) -> tuple[pd.DataFrame, ModuleType | None]:
    labelled_mod = optional_module("shared.labelled")
    if labelled_mod is None:
        return pd.DataFrame(columns=RAW_COLUMNS + [LABEL]), None
    return labelled_mod.load_labelled(paths), labelled_mod


def split_labelled(labelled: pd.DataFrame, *, window_size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to train on, the most recent `window_size` rows held back for the gate, never trained on)."""
    if len(labelled) <= window_size:
        return labelled.iloc[:0], labelled.reset_index(drop=True)
    cut = len(labelled) - window_size
    return labelled.iloc[:cut].reset_index(drop=True), labelled.iloc[cut:].reset_index(drop=True)


def _nullable_ints(df: pd.DataFrame) -> pd.DataFrame:
    """Integer columns as nullable Int64, so rows without them do not turn them into floats in the CSV."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_integer_dtype(out[col]):
            out[col] = out[col].astype("Int64")
    return out


def retrain_table(base: pd.DataFrame, extra: pd.DataFrame, *, base_version: str) -> pd.DataFrame:
    """Base training rows (oldest) then the labelled production rows, oldest first."""
    keep = [c for c in RAW_COLUMNS + [LABEL, "request_id", "time", "model_version"] if c in extra.columns]
    rows = extra[keep].copy()
    rows[LABEL] = rows[LABEL].astype("int64")
    rows["source"] = "labelled"
    first = _nullable_ints(base).assign(source=base_version)
    return pd.concat([first, _nullable_ints(rows)], ignore_index=True)


def _existing_version(store: DataStore, *, message_id: str, name: str, digest: str) -> str | None:
    """A data version an earlier attempt of this job already wrote with the same content."""
    for e in store.entries():
        if (
            e.producer == PRODUCER
            and e.params.get("message_id") == message_id
            and e.params.get("file") == name
            and e.sha256 == digest
        ):
            return e.data_version
    return None


def build_retrain_version(
    settings: Settings,
    *,
    store: DataStore,
    message: RetrainMessage,
    labelled_mod: ModuleType,
    train_rows: pd.DataFrame,
    window: pd.DataFrame,
) -> str:
    """Write v<N>_retrain/{labelled.csv, gate_window.csv, train.csv} through the data store; returns the version.

    labelled.csv is a snapshot of the labelled rows trained on (input: the monitor's labelled file), so the
    manifest entry of train.csv names stable inputs: the base train.csv and that snapshot.
    """
    paths = store.paths
    base_version = settings.data.version
    base_path = paths.train_file(base_version)
    base = store.read_table(base_path)
    table = retrain_table(base, train_rows, base_version=base_version)
    digest = sha256_bytes(table_bytes(table))
    reuse = _existing_version(store, message_id=message.id, name="train.csv", digest=digest)
    if reuse:
        log.info("job %s: reusing data version %s written by an earlier attempt", message.id, reuse)
        return reuse
    version = check_data_version(f"v{store.next_version_number()}_{RETRAIN_SUFFIX}")
    folder = paths.data_version_dir(version)
    params = {
        "step": "retrain",
        "message_id": message.id,
        "base_version": base_version,
        "gate_window_size": settings.monitoring.gate.window_size,
    }
    source_file = labelled_mod.labelled_file(paths) if hasattr(labelled_mod, "labelled_file") else None
    snapshot = folder / LABELLED_SNAPSHOT
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        # The monitor keeps appending to its file: if it changed during the step, take the step again.
        try:
            step = store.begin(producer=PRODUCER, inputs=[source_file] if source_file and source_file.is_file() else [])
            store.write_table(
                step,
                data_version=version,
                path=snapshot,
                df=train_rows,
                params={**params, "file": LABELLED_SNAPSHOT, "part": "labelled rows trained on"},
            )
            store.write_table(
                step,
                data_version=version,
                path=folder / GATE_WINDOW,
                df=window,
                params={**params, "file": GATE_WINDOW, "part": "gate window, never trained on"},
            )
            break
        except IntegrityError:
            if attempt == WRITE_ATTEMPTS:
                raise
            log.info("job %s: labelled file changed while snapshotting (attempt %d); retrying", message.id, attempt)
    step = store.begin(producer=PRODUCER, inputs=[base_path, snapshot])
    store.write_table(
        step,
        data_version=version,
        path=paths.train_file(version),
        df=table,
        params={**params, "file": "train.csv", "base_rows": len(base), "labelled_rows": len(train_rows)},
    )
    log.info(
        "job %s: data version %s = %d base rows + %d labelled rows (%d held back for the gate)",
        message.id,
        version,
        len(base),
        len(train_rows),
        len(window),
    )
    return version


def run_gate(
    settings: Settings, *, paths: Paths, registry: Registry, candidate: Candidate, window: pd.DataFrame
) -> dict | None:
    if window.empty:
        log.info("no labelled rows: candidate registered without a gate decision")
        return None
    gate_mod = optional_module("shared.gate")
    if gate_mod is None:
        return None
    latest = registry.latest()
    hint = f"v{int(latest[1:]) + 1}" if latest else "v1"
    return gate_mod.decide(
        settings=settings,
        paths=paths,
        candidate_bytes=candidate.model_bytes,
        candidate_version_hint=hint,
        window=window,
    )


def register_once(registry: Registry, *, candidate: Candidate, trigger: dict, gate: dict | None) -> tuple[dict, bool]:
    """Register unless this message id already produced a model (checked under the registry's lock)."""
    with locked(registry.dir / ".message-registration"):
        existing = registry.find_by_trigger(trigger["message_id"])
        if existing:
            return registry.metadata(existing), False
        return registry.register(
            model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=trigger, gate=gate)
        ), True


def promote(settings: Settings, *, paths: Paths, version: str, gate: dict | None) -> bool:
    if not gate or gate.get("decision") != "promote":
        return False
    if not gate.get("auto_promote", settings.monitoring.gate.auto_promote):
        log.info("gate says promote %s, but monitoring.gate.auto_promote is false: left for a person", version)
        return False
    pin_mod = optional_module("shared.pin")
    if pin_mod is None:
        return False
    pin_mod.set_pin(settings.config_path, version, paths=paths)
    log.info("promoted %s: deployment.model_version in %s", version, settings.config_path)
    return True


def run_retrain(settings: Settings, message: RetrainMessage, *, registry: Registry | None = None) -> dict:
    """Carry out one retrain message; returns {version, data_version, created, gate_decision, promoted}."""
    paths = Paths.from_settings(settings)
    registry = registry or Registry(paths=paths)
    store = DataStore(paths=paths)
    existing = registry.find_by_trigger(message.id)
    if existing:
        log.info("job %s already produced %s: nothing to do", message.id, existing)
        return {
            "version": existing,
            "data_version": registry.metadata(existing)["data_version"],
            "created": False,
            "gate_decision": None,
            "promoted": False,
        }
    window = pd.DataFrame()
    if message.data_version:
        data_version = check_data_version(message.data_version)
    else:
        data_version = settings.data.version
        if message.include_production:
            labelled, labelled_mod = load_labelled(paths)
            train_rows, window = split_labelled(labelled, window_size=settings.monitoring.gate.window_size)
            if not train_rows.empty:
                data_version = build_retrain_version(
                    settings,
                    store=store,
                    message=message,
                    labelled_mod=labelled_mod,
                    train_rows=train_rows,
                    window=window,
                )
            else:
                log.info(
                    "job %s: %d labelled rows, all held back for the gate; training on %s",
                    message.id,
                    len(labelled),
                    data_version,
                )
    candidate = train_candidate(settings, data_version=data_version)
    gate = run_gate(settings, paths=paths, registry=registry, candidate=candidate, window=window)
    md, created = register_once(registry, candidate=candidate, trigger=message_trigger(message), gate=gate)
    promoted = promote(settings, paths=paths, version=md["version"], gate=gate) if created else False
    return {
        "version": md["version"],
        "data_version": md["data_version"],
        "created": created,
        "gate_decision": (gate or {}).get("decision"),
        "promoted": promoted,
    }
