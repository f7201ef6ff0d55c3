"""A retrain's data version: config's training rows plus the labelled production rows, minus a gate window.

    shared.labelled.load_labelled -> split_labelled: (rows to train on, the newest `window_size` rows held
    back for the gate) -> v<N>_retrain/{labelled.csv, gate_window.csv, train.csv} through the data store

Every file is one manifest entry (producer services.trainer.retrain, the message id in its params), so a job
taken again after a crash finds and reuses the version an earlier attempt wrote instead of writing another. A
crash mid-version leaves a partial folder with manifest entries for what was complete; the next attempt of
the same message writes a new version number.
"""

from __future__ import annotations

import logging

import pandas as pd

from shared.atomic import sha256_bytes
from shared.config import Settings
from shared.dataset import DatasetConfig
from shared.datastore import DataStore, table_bytes
from shared.errors import IntegrityError
from shared.labelled import labelled_file
from shared.paths import LABELLED_SNAPSHOT, check_data_version
from shared.schemas import RetrainMessage

log = logging.getLogger(__name__)
PRODUCER = "services.trainer.retrain"  # the manifest's producer name for retrain data (earlier entries use it)
RETRAIN_SUFFIX = "retrain"
GATE_WINDOW = "gate_window.csv"
WRITE_ATTEMPTS = 3


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


def retrain_table(base: pd.DataFrame, extra: pd.DataFrame, *, base_version: str, ds: DatasetConfig) -> pd.DataFrame:
    """Base training rows (oldest) then the labelled production rows, oldest first."""
    label = ds.label.name
    keep = [c for c in ds.feature_names + [label, "request_id", "time", "model_version"] if c in extra.columns]
    rows = extra[keep].copy()
    rows[label] = rows[label].astype("int64")
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
    table = retrain_table(base, train_rows, base_version=base_version, ds=settings.dataset)
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
    source_file = labelled_file(paths)
    snapshot = folder / LABELLED_SNAPSHOT
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        # The monitor keeps appending to its file: if it changed during the step, take the step again.
        try:
            step = store.begin(producer=PRODUCER, inputs=[source_file] if source_file.is_file() else [])
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
