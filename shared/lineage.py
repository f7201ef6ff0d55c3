"""Lineage: from one request_id back to the raw file and the code.

prediction (prediction log) + its label (feedback log), found through the lineage index (shared/lineage_index.py:
caught up with what was appended to the logs, then one read per line, or per Parquet file of a compacted segment:
the cost does not grow with history); a
malformed prediction line is an error naming file:line, a malformed feedback line goes under `problems`
 -> model version: metrics, onnx sha256, git commit, the trigger and gate that produced it
 -> what the deployment log says was serving when it answered (deployment_log.csv)
 -> data version: its manifest entries
 -> for every training file, the chain of manifest entries through their inputs back to files no step
    produced (the raw data), each raw file re-hashed and compared with config.yaml's dataset.raw_sha256.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import ValidationError

from shared.atomic import sha256_file
from shared.datastore import DataStore
from shared.deploylog import serving_at
from shared.errors import DataValidationError, NotFoundError, explain
from shared.lineage_index import Hit, LineageIndex
from shared.paths import Paths, instance_of
from shared.registry import Registry
from shared.schemas import FeedbackRecord, ManifestEntry, PredictionRecord

MAX_DEPTH = 20
log = logging.getLogger(__name__)


def find_prediction(paths: Paths, request_id: str, hits: list[Hit] | None = None) -> tuple[Path, PredictionRecord]:
    """The first well-formed prediction record of request_id (by log file name, then line); `hits`: the index's
    lines for it (default: looked up). Only malformed ones: DataValidationError naming the first (file:line)."""
    malformed = []
    for hit in LineageIndex(paths).find(request_id) if hits is None else hits:
        if hit.kind != "prediction":
            continue
        try:
            rec = PredictionRecord.model_validate_json(hit.text)
        except ValidationError as e:
            malformed.append(
                f"{hit.path}:{hit.line}: the prediction record for request_id {request_id!r} is malformed: {explain(e)}"
            )
            continue
        if rec.request_id == request_id:
            return hit.path, rec
    if malformed:
        raise DataValidationError(malformed[0] + (f" (+{len(malformed) - 1} more)" if len(malformed) > 1 else ""))
    raise NotFoundError(f"No prediction with request_id {request_id!r} in {paths.prediction_log_dir}")


def find_feedback(
    paths: Paths, request_id: str, hits: list[Hit] | None = None, *, problems: list[str] | None = None
) -> list[dict]:
    """The labels for request_id; a malformed line that mentions it goes to `problems` (file:line: why)."""
    out = []
    store = DataStore(paths=paths)
    for hit in LineageIndex(paths).find(request_id) if hits is None else hits:
        if hit.kind != "feedback":
            continue
        try:
            rec = FeedbackRecord.model_validate_json(hit.text)
        except ValidationError as e:
            if problems is not None:
                problems.append(f"{store.rel(hit.path)}:{hit.line}: malformed feedback line: {explain(e)}")
            continue
        if rec.request_id == request_id:
            out.append(rec.model_dump() | {"log": store.rel(hit.path)})
    return out


def provenance(
    entries: list[ManifestEntry], path: str, sha256: str, *, raw_rel: str, raw_sha256: str, depth: int = 0
) -> dict:
    """The manifest entry that produced (path, sha256) and, recursively, its inputs."""
    producers = [e for e in entries if e.path == path and e.sha256 == sha256]
    node: dict = {"path": path, "sha256": sha256}
    if not producers or depth >= MAX_DEPTH:
        node["produced_by"] = None
        node["is_raw"] = path == raw_rel
        if node["is_raw"]:
            node["matches_config_raw_sha256"] = sha256 == raw_sha256
        return node
    e = producers[-1]
    node |= {
        "data_version": e.data_version,
        "rows": e.rows,
        "producer": e.producer,
        "git_commit": e.git_commit,
        "git_dirty": e.git_dirty,
        "created_at": e.created_at,
        "inputs": [
            provenance(entries, i.path, i.sha256, raw_rel=raw_rel, raw_sha256=raw_sha256, depth=depth + 1)
            for i in e.inputs
        ],
    }
    return node


def _raw_leaves(node: dict) -> list[dict]:
    if "inputs" not in node:
        return [node]
    return [leaf for child in node["inputs"] for leaf in _raw_leaves(child)]


def lineage(paths: Paths, request_id: str) -> dict:
    hits = LineageIndex(paths).find(request_id)
    log_path, pred = find_prediction(paths, request_id, hits)
    store = DataStore(paths=paths)
    md = Registry(paths=paths).metadata(pred.model_version)
    entries = store.entries()
    raw_rel = store.rel(paths.raw_file)
    raw_expected = paths.settings.dataset.raw_sha256
    problems: list[str] = []
    feedback = find_feedback(paths, request_id, hits, problems=problems)
    for problem in problems:
        log.warning("lineage of %s: %s", request_id, problem)
    chains = [
        provenance(entries, f["path"], f["sha256"], raw_rel=raw_rel, raw_sha256=raw_expected) for f in md["data_files"]
    ]
    raw_files = {}
    for chain in chains:
        for leaf in _raw_leaves(chain):
            p = paths.volume / leaf["path"]
            raw_files[leaf["path"]] = leaf | {"sha256_on_disk": sha256_file(p) if p.is_file() else None}
    return {
        "request_id": request_id,
        "prediction": pred.model_dump() | {"log": store.rel(log_path)},
        "feedback": feedback,
        "problems": problems,
        "model": {
            "version": md["version"],
            "created_at": md["created_at"],
            "onnx_sha256": md["onnx_sha256"],
            "metrics": md["metrics"],
            "config": md["config"],
            "trigger": md.get("trigger"),
            "gate": md.get("gate"),
            "metadata_file": store.rel(paths.metadata_file(md["version"])),
        },
        "deployment": serving_at(paths, pred.time, instance_id=instance_of(log_path)) or serving_at(paths, pred.time),
        "data": {
            "version": md["data_version"],
            "files": md["data_files"],
            "manifest_entries": [e.model_dump() for e in entries if e.data_version == md["data_version"]],
            "provenance": chains,
        },
        "raw": {"expected_sha256": raw_expected, "files": list(raw_files.values())},
        "code": {
            "model_git": md["git"],
            "data_git_commits": sorted({e.git_commit for e in entries if e.data_version == md["data_version"]}),
        },
    }


def lineage_json(paths: Paths, request_id: str) -> str:
    return json.dumps(lineage(paths, request_id), indent=2, default=str)
