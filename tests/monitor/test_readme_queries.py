"""The README's DuckDB queries over the Parquet logs, run as written against a compacted volume, give what pandas
computes from the same records."""
from __future__ import annotations

import re

import duckdb  # requirements-dev.txt: the test must run, never skip
import pandas as pd
import pytest

from shared.paths import Paths
from tests.conftest import ROOT
from tests.monitor.test_compact import ingest_and_compact, write_segments



def readme_queries() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### 8. Query the logs"):text.index("### Keys")]
    queries = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(queries) == 2, "README lost its two DuckDB queries"
    return queries


def run(query: str, volume) -> pd.DataFrame:
    con = duckdb.connect()
    *setup, last = [q.strip() for q in query.replace("volumes/", f"{volume}/").split(";") if q.strip()]
    for statement in setup:
        con.execute(statement)
    return con.execute(last).df()


def test_the_readme_queries_match_pandas(trained):
    paths = Paths.from_settings(trained)
    preds, fbs, _ = write_segments(paths, n=240, versions=("v1", "v2"), spacing_s=97.0)  # ~6.5 hours, two versions
    ingest_and_compact(paths)
    compacted = paths.prediction_log("i1").read_bytes() if paths.prediction_log("i1").exists() else None
    assert compacted is None  # the first segment was compacted
    half = len(preds) // 2
    p = pd.DataFrame(preds[:half])
    p["hour"] = pd.to_datetime(p["time"], utc=True).dt.floor("h")
    by_hour, agreement = (run(q, paths.volume) for q in readme_queries())

    want = p.groupby(["hour", "model_version"]).agg(predictions=("label", "size"), failure_rate=("label", "mean"))
    got = by_hour.assign(hour=pd.to_datetime(by_hour["hour"], utc=True)).set_index(["hour", "model_version"])
    assert len(want) >= 6
    assert got["predictions"].to_dict() == want["predictions"].to_dict()
    assert got["failure_rate"].to_dict() == pytest.approx(want["failure_rate"].to_dict())

    f = pd.DataFrame(fbs[:-1]).rename(columns={"label": "true"})
    joined = p.merge(f[["request_id", "true"]], on="request_id")
    joined["day"] = joined["hour"].dt.strftime("%Y-%m-%d")
    joined["agree"] = (joined["label"] == joined["true"]).astype(float)
    want = joined.groupby(["day", "model_version"]).agg(labelled=("agree", "size"), agreement=("agree", "mean"))
    got = agreement.assign(day=agreement["day"].astype(str)).set_index(["day", "model_version"])
    assert len(want) == 2 and want["agreement"].between(0, 1).all()
    assert got["labelled"].to_dict() == want["labelled"].to_dict()
    assert got["agreement"].to_dict() == pytest.approx(want["agreement"].to_dict())
