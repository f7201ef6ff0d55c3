"""Traffic replay: send a day-2 production set through the inference API, labels arriving late.

Rows are sent in time order (the dataset's order column). Each is POSTed to `/predict` (its readings: every
dataset feature by its name, a categorical one as its level, a numeric one as a number) at `rate` requests per
second; its true label (the dataset's label, 0 / 1) is POSTed to `/feedback` with the returned request_id
`feedback_delay` seconds later, from a time-ordered queue: ground truth arrives late in a real plant.
Bounded: it stops after the last row's label, or `limit` rows. The data set is read through the data store,
so it is checked against its manifest entry first.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import requests
from tqdm import tqdm

from shared.config import Settings, api_key_from_env
from shared.dataset import CategoricalColumn, DatasetConfig
from shared.datastore import DataStore
from shared.errors import ReplayError
from shared.paths import Paths

log = logging.getLogger(__name__)

NATURAL = "natural"
TIMEOUT_S = 10.0
MAX_CONSECUTIVE_FAILURES = 20


def dataset_names(settings: Settings) -> list[str]:
    return [NATURAL] + [r.name for r in settings.data.day2.recipes]


def resolve_dataset(paths: Paths, dataset: str) -> Path:
    """natural | <recipe name> -> the day-2 file; anything else is a path to a managed CSV."""
    names = dataset_names(paths.settings)
    if dataset in names:
        return paths.production_version_dir(paths.settings.data.versions.day2) / f"{dataset}.csv"
    path = Path(dataset)
    if path.suffix == ".csv" and path.is_file():
        return path.resolve()
    raise ReplayError(
        f"unknown data set {dataset!r}: expected one of {names} or the path of a CSV file listed in the manifest"
    )


def load_dataset(paths: Paths, dataset: str, *, limit: int | None = None) -> tuple[Path, pd.DataFrame]:
    path = resolve_dataset(paths, dataset)
    df = DataStore(paths=paths).read_table(path)
    ds = paths.settings.dataset
    missing = [c for c in [ds.order.name, *ds.feature_names, ds.label.name] if c not in df.columns]
    if missing:
        raise ReplayError(f"{path} lacks columns {missing} of dataset {ds.name}")
    df = df.sort_values(ds.order.name, kind="stable", key=_order_key(ds))
    if limit is not None:
        df = df.iloc[:limit]
    return path, df.reset_index(drop=True)


def _order_key(dataset: DatasetConfig) -> Callable[[pd.Series], pd.Series] | None:
    """The sort key of the time order: a timestamp sorts by the time it means, not by its text."""
    if dataset.order.kind == "timestamp":
        return lambda s: pd.to_datetime(s, utc=True, format="ISO8601")
    return None


def reading(row: dict, dataset: DatasetConfig) -> dict:
    """One /predict body: every feature by its name, as JSON-native values (a level as text, a number as float)."""
    out: dict[str, str | float] = {}
    for c in dataset.features:
        out[c.name] = str(row[c.name]) if isinstance(c, CategoricalColumn) else float(row[c.name])
    return out


class DueLabel(NamedTuple):
    """A label waiting to be posted (ordered by when it is due, then by row)."""

    at: float  # clock time it is due
    sequence: int
    request_id: str
    label: int


@dataclass
class ReplayResult:
    rows: int = 0
    predicted: int = 0
    predict_errors: int = 0
    feedback_sent: int = 0
    feedback_errors: int = 0
    seconds: float = 0.0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "request_ids"} | {
            "rate_achieved": round(self.predicted / self.seconds, 1) if self.seconds else None
        }


class Replayer:
    def __init__(
        self,
        *,
        dataset: DatasetConfig,
        url: str,
        rate: float,
        feedback_delay: float,
        session: requests.Session | None = None,
        progress: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ReplayError(f"rate must be positive, got {rate}")
        if feedback_delay < 0:
            raise ReplayError(f"feedback delay must be zero or more, got {feedback_delay}")
        self.dataset = dataset
        self.url = url.rstrip("/")
        self.rate = rate
        self.delay = feedback_delay
        self.session = session or requests.Session()
        self.progress = progress
        self.clock = clock
        self.sleep = sleep
        self._consecutive = 0

    def run(self, df: pd.DataFrame) -> ReplayResult:
        result = ReplayResult(rows=len(df))
        due: list[DueLabel] = []  # a heap, soonest first
        start = self.clock()
        label = self.dataset.label.name
        rows = df[[*self.dataset.feature_names, label]].to_dict("records")
        with tqdm(total=len(rows), unit="req", desc=f"replay -> {self.url}", disable=not self.progress) as bar:
            for i, row in enumerate(rows):
                self._wait_until(start + i / self.rate, due, result)
                request_id = self._predict(row, result)
                if request_id is not None:
                    heapq.heappush(due, DueLabel(self.clock() + self.delay, i, request_id, int(row[label])))
                bar.update(1)
                bar.set_postfix(errors=result.predict_errors, labels=result.feedback_sent, refresh=False)
            # The late labels still queued.
            while due:
                self._wait_until(due[0].at, due, result)
        result.seconds = self.clock() - start
        log.info("replay done: %s", result.summary())
        return result

    def _wait_until(self, target: float, due: list[DueLabel], result: ReplayResult) -> None:
        while True:
            now = self.clock()
            while due and due[0].at <= now:
                label = heapq.heappop(due)
                self._feedback(label.request_id, label.label, result)
                now = self.clock()
            if now >= target:
                return
            self.sleep(min(target, due[0].at) - now if due else target - now)

    def _post(self, route: str, body: dict, result: ReplayResult, kind: str) -> dict | None:
        try:
            resp = self.session.post(f"{self.url}{route}", json=body, timeout=TIMEOUT_S)
        except requests.RequestException as e:
            self._failed(result, f"{kind}:connection", f"{route}: {e}")
            return None
        if resp.status_code >= 300:
            self._failed(
                result,
                f"{kind}:http_{resp.status_code}",
                f"{route}: HTTP {resp.status_code} {resp.text[:200]}",
                connection=False,
            )
            return None
        self._consecutive = 0
        try:
            return resp.json()
        except ValueError:
            self._failed(result, f"{kind}:bad_json", f"{route}: response is not JSON", connection=False)
            return None

    def _failed(self, result: ReplayResult, key: str, detail: str, *, connection: bool = True) -> None:
        result.errors_by_kind[key] = result.errors_by_kind.get(key, 0) + 1
        if result.errors_by_kind[key] <= 3:
            log.warning("replay: %s", detail)
        self._consecutive = self._consecutive + 1 if connection else 0
        if self._consecutive >= MAX_CONSECUTIVE_FAILURES:
            raise ReplayError(
                f"inference at {self.url} does not answer ({self._consecutive} failures in a row; last: {detail})"
            )

    def _predict(self, row: dict, result: ReplayResult) -> str | None:
        body = self._post("/predict", reading(row, self.dataset), result, "predict")
        request_id = body.get("request_id") if isinstance(body, dict) else None
        if request_id is None:
            result.predict_errors += 1
            return None
        result.predicted += 1
        result.request_ids.append(request_id)
        return request_id

    def _feedback(self, request_id: str, label: int, result: ReplayResult) -> None:
        body = self._post("/feedback", {"request_id": request_id, "label": label}, result, "feedback")
        if body is None:
            result.feedback_errors += 1
        else:
            result.feedback_sent += 1


def replay(
    *,
    settings: Settings,
    dataset: str,
    rate: float | None = None,
    limit: int | None = None,
    url: str | None = None,
    feedback_delay: float | None = None,
    progress: bool = True,
) -> ReplayResult:
    """Replay a data set with the configured defaults (monitoring.replay) where an option is not given."""
    cfg = settings.monitoring.replay
    paths = Paths.from_settings(settings)
    path, df = load_dataset(paths, dataset, limit=limit)
    rate = cfg.rate_per_s if rate is None else rate
    delay = cfg.feedback_delay_s if feedback_delay is None else feedback_delay
    url = url or settings.replay_url
    log.info("replaying %d row(s) of %s to %s at %.1f req/s, labels after %.1f s", len(df), path, url, rate, delay)
    with requests.Session() as session:
        key = api_key_from_env()
        if key:  # /feedback is keyed when the service has a key: send it (never logged)
            session.headers["X-API-Key"] = key
        return Replayer(
            dataset=settings.dataset, url=url, rate=rate, feedback_delay=delay, session=session, progress=progress
        ).run(df)
