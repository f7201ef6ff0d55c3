"""Joining one ingest step's predictions and labels with each other and with what waits in the store.

`Joiner` decides, in log order, which prediction each label joins (services.monitor.ingest calls it inside the
step's transaction):
- a prediction whose label already waits (an orphan in the store) joins it at once;
- a label joins the prediction of its request_id read in this step (the last one logged, if logged twice) or,
  failing that, one waiting in the store; a second label for a request_id whose label waits is a duplicate
  (counted, logged, ignored); any other label waits for its prediction (an orphan).
The store is asked only about request_ids it holds (it keeps their set: services.monitor.store), so a step
whose predictions and labels meet each other costs no index lookups. The joined rows then become, in join
order, the labelled lines (`labelled`: the dataset's labelled record, keys sorted, byte for byte what the
record's dict dumped with sorted keys gives), the version windows' rows (`windows`) and the per-version counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from itertools import chain, compress, filterfalse
from operator import attrgetter, itemgetter

import orjson

from services.monitor.batch import Batch, Joined
from services.monitor.rows import OrphanLabel, PendingPrediction, WindowRow
from services.monitor.store import MonitorStore
from shared.dataset import DatasetConfig

log = logging.getLogger(__name__)

_ROW = itemgetter(1)
_VERSION = attrgetter("model_version")
_LABEL = attrgetter("label")
_TIME = attrgetter("time")


class Joiner:
    def __init__(self, dataset: DatasetConfig) -> None:
        # The labelled record is the features, then these (a feature of the same name is overwritten, as a dict
        # update would). Its keys in sorted order and, for each, where its value sits in the tuple `labelled`
        # builds (readings, then these seven in this order).
        names = [
            *dataset.feature_names,
            "time",
            "request_id",
            "model_version",
            dataset.label.name,
            "probability",
            "predicted",
            "feedback_time",
        ]
        source = {name: i for i, name in enumerate(names)}  # the last of a repeated name wins
        self.keys = sorted(source)
        self._pick = itemgetter(*(source[k] for k in self.keys))
        self._levels_hold_separator = any("},{" in level for c in dataset.categorical for level in c.levels)

    # --- deciding -----------------------------------------------------------------------------
    def predictions(
        self, store: MonitorStore, preds: dict[str, PendingPrediction], batch: Batch
    ) -> dict[str, PendingPrediction]:
        """A prediction whose label already waits joins it; returns the others (they wait for theirs)."""
        orphans = store.orphans_among(list(preds)) if preds else {}
        if not orphans:
            return preds
        waiting = {}
        for rid, row in preds.items():
            label = orphans.pop(rid, None)
            if label is None:
                waiting[rid] = row
            else:
                batch.joined.append((rid, row, label))
        store.drop("orphans", [rid for rid in preds if rid not in waiting])
        return waiting

    def labels(
        self,
        store: MonitorStore,
        labels: list[tuple[str, OrphanLabel, str]],
        batch: Batch,
        fresh: dict[str, PendingPrediction],
    ) -> None:
        """Join each label (request_id, label, file) to its prediction in `fresh` (taken out of it) or in the
        store, count a second label for a waiting orphan's request_id as a duplicate, keep the others waiting."""
        if not labels:
            return
        ids = list(dict.fromkeys(map(itemgetter(0), labels)))
        pending = store.pending_among(list(filterfalse(fresh.__contains__, ids)))
        known = set(store.orphans_among(ids))
        joined = batch.joined
        orphans: dict[str, OrphanLabel] = {}
        duplicates = 0
        for rid, label, path in labels:
            row = fresh.pop(rid, None) or pending.pop(rid, None)
            if row is not None:
                joined.append((rid, row, label))  # (a copy logged in an earlier batch may wait in the store too)
            elif rid in known:
                duplicates += 1
                log.warning("second label for request_id %s in %s ignored (the first one counts)", rid, path)
            else:
                orphans[rid] = label
                known.add(rid)
        if duplicates:
            batch.totals["duplicate_feedback"] = batch.totals.get("duplicate_feedback", 0) + duplicates
        store.drop("pending", [rid for rid, _, _ in joined])
        store.put_orphans(orphans)

    # --- what the joined rows become ------------------------------------------------------------
    def labelled(self, joined: list[Joined]) -> bytes:
        """The labelled lines of the joined rows, in join order, as one block of bytes. (The rows hold the label
        and the served label as ints and the probability as a float already: services.monitor.rows.)"""
        keys, pick = self.keys, self._pick
        records = [
            dict(zip(keys, pick((*values, t, rid, version, y, p, predicted, ft)), strict=True))
            for rid, (t, version, values, p, predicted), (ft, y) in joined
        ]
        # One dumps of the list (a call per record costs three times as much), then one line per record: the
        # records are flat, so each "},{" separates two of them unless a text value holds one (the levels are
        # checked once; ids, versions and times here).
        data = orjson.dumps(records)
        rows = list(map(_ROW, joined))
        texts = chain(
            map(itemgetter(0), joined),
            set(map(_VERSION, rows)),
            set(map(_TIME, rows)),
            set(map(_TIME, map(itemgetter(2), joined))),
        )
        if not self._levels_hold_separator and "},{" not in "\n".join(texts):
            return data[1:-1].replace(b"},{", b"}\n{") + b"\n"
        return b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)

    @staticmethod
    def windows(joined: list[Joined], keep: int) -> dict[str, list[WindowRow]]:
        """Per model version, the newest `keep` of its joined rows as window rows (`batch.newest`: all of them
        in join order if there are no more, else the `keep` latest by prediction time, oldest first)."""
        groups: dict[str, list[Joined]] = {}
        versions = list(map(_VERSION, map(_ROW, joined)))
        if len(set(versions)) == 1:
            groups[versions[0]] = joined
        else:
            for version, j in zip(versions, joined, strict=True):
                groups.setdefault(version, []).append(j)
        out = {}
        for version, rows in groups.items():
            if len(rows) > keep:
                times = list(map(_TIME, map(_ROW, rows)))
                rows = [rows[i] for i in sorted(range(len(rows)), key=times.__getitem__)[-keep:]]
            out[version] = [
                WindowRow(row.time, int(label.label), int(row.predicted), float(row.probability))
                for _, row, label in rows
            ]
        return out

    @staticmethod
    def count(batch: Batch) -> None:
        """Add the joined rows to their versions' labelled and positive counts."""
        versions = list(map(_VERSION, map(_ROW, batch.joined)))
        positives = Counter(compress(versions, map(int, map(_LABEL, map(itemgetter(2), batch.joined)))))
        for version, n in Counter(versions).items():
            c = batch.version(version)
            c.labelled += n
            c.positives += positives.get(version, 0)
