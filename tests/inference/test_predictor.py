"""The coalescing predictor: concurrent single-row requests share one ONNX call and one log write."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from services.inference.holder import load_serving_model
from services.inference.logs import PredictionLog, RequestIds, UtcClock
from services.inference.metrics import Metrics
from services.inference.predictor import Predictor

ROWS = [(0.0, 298.1, 308.6, 1551.0, 42.8, 0.0), (0.0, 300.0, 310.0, 1300.0, 65.0, 230.0),
        (2.0, 302.0, 311.0, 2800.0, 5.0, 10.0)]


def inputs(row):
    return {"type": "LMH"[int(row[0])], "air_temperature_k": row[1], "process_temperature_k": row[2],
            "rotational_speed_rpm": row[3], "torque_nm": row[4], "tool_wear_min": row[5]}


@pytest.fixture
def models(paths):
    metrics = Metrics()
    out = {}
    for v in ("v1", "v2"):
        m = load_serving_model(paths, v, probe=np.array([ROWS[0]] * 2, dtype=np.float32))
        m.predict_route = metrics.route("/predict", v)
        out[v] = m
    return metrics, out


def make(metrics, tmp_path, **kw):
    p = Predictor(ids=RequestIds(), clock=UtcClock(), metrics=metrics, **kw)
    p.log = PredictionLog(tmp_path / "p.jsonl")
    return p


def expected(model, row):
    import numpy as np

    return float(model.predict_many(np.array([row], dtype=np.float32))[0])


def test_concurrent_rows_run_as_one_call_and_one_write(models, tmp_path):
    metrics, m = models
    p = make(metrics, tmp_path)

    async def main():
        p.loop = asyncio.get_running_loop()
        return await asyncio.gather(*(p.submit(m["v1"], row, inputs(row)) for row in ROWS * 5))

    results = asyncio.run(main())
    assert (metrics.onnx_runs, metrics.onnx_rows) == (1, 15)
    assert len({rid for rid, _, _ in results}) == 15
    for (_rid, prob, label), row in zip(results, ROWS * 5, strict=True):
        assert prob == pytest.approx(expected(m["v1"], row), abs=1e-7) and label == int(prob >= 0.5)
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["request_id"] for x in lines] == [r[0] for r in results]
    assert {x["model_version"] for x in lines} == {"v1"}
    assert m["v1"].predict_route.predicted == [sum(1 - r[2] for r in results), sum(r[2] for r in results)]


def test_a_batch_stays_open_while_requests_keep_arriving(models, tmp_path):
    metrics, m = models
    p = make(metrics, tmp_path)

    async def late(row, delay_iterations):
        for _ in range(delay_iterations):
            await asyncio.sleep(0)
        return await p.submit(m["v1"], row, inputs(row))

    async def main():
        p.loop = asyncio.get_running_loop()
        return await asyncio.gather(late(ROWS[0], 0), late(ROWS[1], 1), late(ROWS[2], 2))

    asyncio.run(main())
    assert (metrics.onnx_runs, metrics.onnx_rows) == (1, 3)


def test_rows_of_two_versions_never_mix(models, tmp_path):
    metrics, m = models
    p = make(metrics, tmp_path)

    async def main():
        p.loop = asyncio.get_running_loop()
        return await asyncio.gather(*(p.submit(m[v], ROWS[1], inputs(ROWS[1])) for v in ("v1", "v2", "v1", "v2")))

    results = asyncio.run(main())
    assert metrics.onnx_runs == 2
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    by_id = {x["request_id"]: x["model_version"] for x in lines}
    for (rid, prob, _), v in zip(results, ("v1", "v2", "v1", "v2"), strict=True):
        assert by_id[rid] == v and prob == pytest.approx(expected(m[v], ROWS[1]), abs=1e-7)


def test_a_full_batch_runs_at_once(models, tmp_path):
    metrics, m = models
    p = make(metrics, tmp_path, max_rows=4)

    async def main():
        p.loop = asyncio.get_running_loop()
        return await asyncio.gather(*(p.submit(m["v1"], ROWS[0], inputs(ROWS[0])) for _ in range(10)))

    assert len(asyncio.run(main())) == 10
    assert metrics.onnx_rows == 10 and metrics.onnx_runs == 3  # 4 + 4 + 2


def test_a_failing_model_fails_every_waiting_request(models, tmp_path):
    metrics, m = models
    p = make(metrics, tmp_path)

    def broken(*_):
        raise RuntimeError("onnx exploded")

    m["v1"].predict_many = broken

    async def main():
        p.loop = asyncio.get_running_loop()
        return await asyncio.gather(*(p.submit(m["v1"], row, inputs(row)) for row in ROWS), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert not (tmp_path / "p.jsonl").read_text()


def test_inline_mode_runs_each_row_at_once(models, tmp_path):
    metrics, m = models
    p = make(metrics, tmp_path, coalesce=False)

    async def main():
        p.loop = asyncio.get_running_loop()
        fut = p.submit(m["v1"], ROWS[1], inputs(ROWS[1]))
        assert fut.done()
        return await fut

    _, prob, _ = asyncio.run(main())
    assert prob == pytest.approx(expected(m["v1"], ROWS[1]), abs=1e-7)
    assert metrics.onnx_runs == 1


def test_a_batch_whose_log_write_fails_answers_every_waiter_503_and_logs_none(models, tmp_path, monkeypatch):
    import errno

    from services.inference.logs import LogUnavailable

    metrics, m = models
    p = make(metrics, tmp_path)
    real_write, calls = __import__("os").write, []

    def full_after_one_line(fd, data):  # a short write (one line and a bit), then ENOSPC
        calls.append(len(data))
        if len(calls) == 1:
            first = bytes(data).index(b"\n") + 5
            return real_write(fd, bytes(data[:first]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("shared.atomic.os.write", full_after_one_line)

    async def main():
        p.loop = asyncio.get_running_loop()
        return await asyncio.gather(*(p.submit(m["v1"], row, inputs(row)) for row in ROWS * 3), return_exceptions=True)

    results = asyncio.run(main())
    assert len(calls) == 2  # one batch, one write that failed part-way
    assert all(isinstance(r, LogUnavailable) and r.status == 503 for r in results)
    assert len({id(r) for r in results}) == 9  # each waiter its own refusal
    assert results[0].detail == "prediction log not writable: No space left on device"
    assert (tmp_path / "p.jsonl").read_bytes() == b""  # the line that landed was undone with the rest
    assert (p.log.failures, p.log.refused) == (1, 9) and m["v1"].predict_route.predicted == [0, 0]
    monkeypatch.undo()

    async def again():
        p.loop = asyncio.get_running_loop()
        return await asyncio.gather(*(p.submit(m["v1"], row, inputs(row)) for row in ROWS))

    ok = asyncio.run(again())
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["request_id"] for x in lines] == [r[0] for r in ok] and p.log.error is None
