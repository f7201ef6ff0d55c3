"""Lineage: from one request_id back to the raw file and the code.

prediction (prediction log) + its label (feedback log)
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
from shared.paths import LOG_SUFFIX, Paths
from shared.registry import Registry
from shared.schemas import FeedbackRecord, ManifestEntry, PredictionRecord

MAX_DEPTH = 20
log = logging.getLogger(__name__)


CHUNK = 1 << 16  # the scan reads this much at a time: the GIL is free during each read, held ~0.1 ms per find


def _scan_file(path: Path, needle: bytes) -> list[tuple[int, bytes]]:
    """(line number, line) of the complete lines of `path` that contain `needle`: read in blocks and searched
    with bytes.find (C speed), so the cost is the file's size, not its number of lines in Python."""
    found: list[tuple[int, bytes]] = []
    lines_before = 0  # complete lines before `block`
    tail = b""
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            block = tail + data if tail else data
            counted_to, line_no = 0, lines_before  # newlines in block[:counted_to], added to line_no
            at = block.find(needle)
            while at >= 0:
                start = block.rfind(b"\n", 0, at) + 1
                end = block.find(b"\n", at)
                if end < 0:
                    break  # the line goes on in the next block (or is unfinished at the end of the file)
                line_no += block.count(b"\n", counted_to, start)
                counted_to = start
                found.append((line_no + 1, block[start : end + 1]))
                at = block.find(needle, end + 1)
            if not data:
                return found
            cut = block.rfind(b"\n") + 1
            if at >= 0 and cut > 0:
                cut = min(cut, block.rfind(b"\n", 0, at) + 1)  # keep the partial line holding a match
            lines_before += block.count(b"\n", 0, cut)
            tail = block[cut:]


def _scan(directory: Path, request_id: str) -> list[tuple[Path, int, bytes]]:
    """(file, line number, line) of the *.jsonl lines in `directory` whose request_id is `request_id`, found by
    `"request_id":"<id>"` as the services write it (compact JSON: PredictionRecord/FeedbackRecord.to_line), so
    one find per block whatever the id (an id such as "M" does not make every line a candidate)."""
    needle = b'"request_id":"' + request_id.encode("utf-8") + b'"'
    found: list[tuple[Path, int, bytes]] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob(f"*{LOG_SUFFIX}")):
        found += [(path, n, line) for n, line in _scan_file(path, needle)]
    return found


def find_prediction(paths: Paths, request_id: str) -> tuple[Path, PredictionRecord]:
    malformed = []
    for path, n, line in _scan(paths.prediction_log_dir, request_id):
        try:
            rec = PredictionRecord.model_validate_json(line)
        except ValidationError as e:
            malformed.append(
                f"{path}:{n}: the prediction record for request_id {request_id!r} is malformed: {explain(e)}"
            )
            continue
        if rec.request_id == request_id:
            return path, rec
    if malformed:
        raise DataValidationError(malformed[0] + (f" (+{len(malformed) - 1} more)" if len(malformed) > 1 else ""))
    raise NotFoundError(f"No prediction with request_id {request_id!r} in {paths.prediction_log_dir}")


def find_feedback(paths: Paths, request_id: str, *, problems: list[str] | None = None) -> list[dict]:
    """The labels for request_id; a malformed line that mentions it goes to `problems` (file:line: why)."""
    out = []
    for path, n, line in _scan(paths.feedback_log_dir, request_id):
        try:
            rec = FeedbackRecord.model_validate_json(line)
        except ValidationError as e:
            if problems is not None:
                problems.append(f"{DataStore(paths=paths).rel(path)}:{n}: malformed feedback line: {explain(e)}")
            continue
        if rec.request_id == request_id:
            out.append(rec.model_dump() | {"log": DataStore(paths=paths).rel(path)})
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
    log_path, pred = find_prediction(paths, request_id)
    store = DataStore(paths=paths)
    md = Registry(paths=paths).metadata(pred.model_version)
    entries = store.entries()
    raw_rel = store.rel(paths.raw_file)
    raw_expected = paths.settings.dataset.raw_sha256
    problems: list[str] = []
    feedback = find_feedback(paths, request_id, problems=problems)
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
        "deployment": serving_at(paths, pred.time, instance_id=log_path.stem) or serving_at(paths, pred.time),
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
