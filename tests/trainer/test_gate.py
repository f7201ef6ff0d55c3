"""The gate: candidate and serving model scored on the same labelled window; promote only if better by the margin."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from services.trainer.gate import GateDecision, decide
from shared.config import Settings
from shared.errors import DataValidationError
from shared.paths import Paths
from shared.registry import Registry
from tests.ai4i import LABEL
from tests.monitor.helpers import day2, stamp


@pytest.fixture
def paths(trained: Settings) -> Paths:
    return Paths.from_settings(trained)

def with_gate(settings, **changes):
    mon = settings.monitoring
    return settings.model_copy(update={"monitoring": mon.model_copy(update={"gate": mon.gate.model_copy(update=changes)})})


@pytest.fixture
def window(paths):
    df = day2(paths, "torque_shift").iloc[:800].copy()
    df["time"] = [stamp(i) for i in range(len(df))]
    df["model_version"] = "v1"
    df["request_id"] = [f"r{i}" for i in range(len(df))]
    return df


class Oracle:
    """A candidate that knows the answers (to test the promote path without training a better model)."""

    def __init__(self, y):
        self.y = np.asarray(y, dtype=np.float32)

    def predict_proba(self, readings):
        return self.y


def by_f1(settings):
    return with_gate(settings, metric="f1", margin=0.01)


def test_an_identical_candidate_is_kept_by_the_margin(trained, paths, window):
    trained = by_f1(trained)
    v1_bytes, md = Registry(paths=paths).load_verified("v1")
    own = md["decision"]["threshold"]  # the identical model at the identical threshold
    result = decide(settings=trained, paths=paths, candidate_bytes=v1_bytes, window=window, candidate_version_hint="v2",
                    candidate_threshold=own)
    assert result.decision == "keep" and not result.promote
    assert result.candidate.scores == result.serving.scores and result.difference == 0.0
    assert result.serving.version == "v1" and result.serving.onnx_sha256 == md["onnx_sha256"]
    assert result.metric == "f1" and result.margin == 0.01 and result.auto_promote is True
    assert result.window.model_dump() == {"rows": 800, "positives": int(window[LABEL].sum()), "first_time": stamp(0),
                                          "last_time": stamp(799), "served_by": {"v1": 800}}
    assert "less than the margin" in result.reason
    assert result.interval.low == result.interval.high == 0.0  # the same decisions on every resampled row
    # With no margin, "at least as good" promotes.
    assert decide(settings=with_gate(trained, margin=0.0), paths=paths, candidate_bytes=v1_bytes, window=window,
                  candidate_threshold=own).decision == "promote"


def test_a_better_candidate_is_promoted_only_when_config_allows(trained, paths, window):
    from shared.onnx_model import load_session

    trained = by_f1(trained)

    def scorer(model_bytes, *, name):
        return Oracle(window[LABEL]) if model_bytes == b"oracle" else load_session(model_bytes, name=name, features=trained.dataset.feature_names)

    result = decide(settings=trained, paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer)
    assert result.decision == "promote" and result.candidate.scores.f1 == 1.0 and result.serving.scores.f1 < 0.99
    kept = decide(settings=with_gate(trained, auto_promote=False), paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer)
    assert kept.decision == "keep" and "auto_promote is false" in kept.reason


def test_the_gate_metric_is_configurable(trained, paths, window):
    from shared.onnx_model import load_session

    trained = by_f1(trained)

    def scorer(model_bytes, *, name):  # flags everything: recall 1, precision tiny
        return Oracle(np.ones(len(window))) if model_bytes == b"all" else load_session(model_bytes, name=name, features=trained.dataset.feature_names)

    assert decide(settings=trained, paths=paths, candidate_bytes=b"all", window=window, scorer=scorer).decision == "keep"
    assert decide(settings=with_gate(trained, metric="recall"), paths=paths, candidate_bytes=b"all", window=window,
                  scorer=scorer).decision == "promote"


def test_an_empty_window_keeps_and_a_window_without_labels_is_refused(trained, paths, window):
    v1_bytes, _ = Registry(paths=paths).load_verified("v1")
    result = decide(settings=trained, paths=paths, candidate_bytes=v1_bytes, window=window.iloc[:0])
    assert result.decision == "keep" and result.window.rows == 0 and result.candidate.scores is None
    with pytest.raises(DataValidationError, match="machine_failure"):
        decide(settings=trained, paths=paths, candidate_bytes=v1_bytes, window=window.drop(columns=[LABEL]))


def test_the_serving_model_is_the_pin_read_now(trained, paths, window):
    from services.trainer.train import train_and_register
    from shared.pin import set_pin

    train_and_register(trained, trigger={"kind": "command", "command": "test"})
    set_pin(trained.config_path, "v2", paths=paths)
    v1_bytes, _ = Registry(paths=paths).load_verified("v1")
    assert decide(settings=trained, paths=paths, candidate_bytes=v1_bytes, window=window).serving.version == "v2"


def test_a_window_with_too_few_failures_keeps_the_serving_model(trained, paths, window):
    from shared.onnx_model import load_session

    def scorer(model_bytes, *, name):
        return Oracle(window[LABEL]) if model_bytes == b"oracle" else load_session(model_bytes, name=name, features=trained.dataset.feature_names)

    positives = int(window[LABEL].sum())
    trained = by_f1(trained)
    strict = with_gate(trained, min_positives=positives + 1)
    result = decide(settings=strict, paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer)
    assert result.decision == "keep"
    assert f"holds {positives} failure(s)" in result.reason and "min_positives" in result.reason
    assert decide(settings=with_gate(trained, min_positives=positives), paths=paths, candidate_bytes=b"oracle",
                  window=window, scorer=scorer).decision == "promote"


def test_the_stored_decision_is_flat_and_loads_back_unchanged(trained, paths, window):
    v1_bytes, md = Registry(paths=paths).load_verified("v1")
    result = decide(settings=trained, paths=paths, candidate_bytes=v1_bytes, window=window, candidate_version_hint="v2")
    stored = result.model_dump(mode="json")
    score_keys = {"f1", "precision", "recall", "accuracy", "error_rate", "confusion_matrix"}
    assert set(stored) == {"decision", "reason", "metric", "margin", "auto_promote", "threshold", "decided_at",
                           "window", "candidate", "serving", "difference", "interval", "costs"}
    assert stored["metric"] == "expected_cost" and stored["costs"] == {"missed_failure": 500.0, "false_alarm": 10.0}
    assert set(stored["interval"]) == {"low", "high", "confidence", "samples", "seed"}
    score_keys |= {"threshold", "expected_cost"}
    assert set(stored["candidate"]) == {"version_hint", "onnx_sha256"} | score_keys
    assert set(stored["serving"]) == {"version", "onnx_sha256"} | score_keys
    assert stored["candidate"]["version_hint"] == "v2" and stored["serving"]["onnx_sha256"] == md["onnx_sha256"]
    assert stored["candidate"]["confusion_matrix"] == result.candidate.scores.confusion_matrix
    assert GateDecision.model_validate(stored) == result
    assert GateDecision.model_validate(json.loads(json.dumps(stored))).model_dump(mode="json") == stored


def test_without_a_serving_model_the_candidate_wins_and_the_record_says_why(trained, paths, window):
    v1_bytes, _ = Registry(paths=paths).load_verified("v1")
    shutil.rmtree(paths.model_dir("v1"))
    result = decide(settings=trained, paths=paths, candidate_bytes=v1_bytes, window=window)
    assert result.decision == "promote" and "no serving model to compare with" in result.reason
    stored = result.model_dump(mode="json")
    assert set(stored["serving"]) == {"version", "error"} and stored["serving"]["version"] == "v1"
    assert "difference" not in stored and stored["candidate"]["version_hint"] is None
    assert stored["candidate"]["f1"] == result.candidate.scores.f1
    assert GateDecision.model_validate(stored) == result


def test_an_empty_window_is_stored_without_scores(trained, paths, window):
    v1_bytes, _ = Registry(paths=paths).load_verified("v1")
    stored = decide(settings=trained, paths=paths, candidate_bytes=v1_bytes, window=window.iloc[:0]).model_dump()
    assert stored["window"] == {"rows": 0, "positives": 0, "first_time": None, "last_time": None}
    assert set(stored["candidate"]) == {"version_hint", "onnx_sha256"} and stored["serving"] == {"version": "v1"}


class Fixed:
    """A model that answers given probabilities."""

    def __init__(self, p):
        self.p = np.asarray(p, dtype=np.float32)

    def predict_proba(self, readings):
        return self.p


def seven_failure_window(window):
    """The first 700 rows with exactly 7 failures (the window sizes the old F1 gate flipped on)."""
    w = window.iloc[:700].copy()
    w[LABEL] = 0
    w.iloc[[50, 150, 250, 350, 450, 550, 650], w.columns.get_loc(LABEL)] = 1
    return w


def fixed_pair(window, candidate_p, serving_p):
    def scorer(model_bytes, *, name):
        return Fixed(candidate_p if model_bytes == b"candidate" else serving_p)

    return scorer


def test_a_candidate_whose_interval_straddles_zero_is_not_promoted(trained, paths, window):
    w = seven_failure_window(window)
    y = w[LABEL].to_numpy()
    failures = np.flatnonzero(y)
    serving_p = y * 0.9  # catches all 7 ...
    serving_p[failures[:2]] = 0.1  # ... but two
    candidate_p = y * 0.9
    candidate_p[failures[:1]] = 0.1  # catches one more failure ...
    candidate_p[np.flatnonzero(y == 0)[:8]] = 0.9  # ... and raises 8 false alarms
    result = decide(settings=trained, paths=paths, candidate_bytes=b"candidate", window=w,
                    scorer=fixed_pair(w, candidate_p, serving_p))
    assert result.window.rows == 700 and result.window.positives == 7
    # Better on the point estimate: one missed failure (500) against 8 false alarms (80), per 700 rows ...
    assert result.difference == pytest.approx(1000 * (500 - 80) / 700)
    # ... but the interval straddles zero (the one failure it adds is absent from many resamples): kept.
    assert result.interval.low < 0 < result.interval.high
    assert result.decision == "keep" and "less than the margin" in result.reason
    assert "interval" in result.reason
    # Comparing the point estimates alone, as the gate used to, would have promoted it.
    assert result.difference >= trained.monitoring.gate.margin


def test_the_same_candidate_and_window_give_the_same_decision_and_interval(trained, paths, window):
    v1_bytes, _ = Registry(paths=paths).load_verified("v1")
    rng = np.random.default_rng(0)
    serving_p = rng.random(len(window)) * (0.2 + 0.8 * window[LABEL].to_numpy())
    runs = [
        decide(settings=trained, paths=paths, candidate_bytes=v1_bytes, window=window,
               scorer=lambda b, *, name: Fixed(serving_p) if name.startswith("serving") else load(b, trained))
        for _ in range(2)
    ]
    first, second = (r.model_dump(mode="json") for r in runs)
    first.pop("decided_at"), second.pop("decided_at")
    assert first == second and first["interval"]["low"] != first["interval"]["high"]
    # Another seed: another interval (the seed is what makes it reproducible).
    other = decide(settings=with_gate(trained, bootstrap=trained.monitoring.gate.bootstrap.model_copy(update={"seed": 7})),
                   paths=paths, candidate_bytes=v1_bytes, window=window,
                   scorer=lambda b, *, name: Fixed(serving_p) if name.startswith("serving") else load(b, trained))
    assert other.interval.model_dump() != runs[0].interval.model_dump()


def load(model_bytes, settings):
    from shared.onnx_model import load_session

    return load_session(model_bytes, name="candidate", features=settings.dataset.feature_names)


def test_each_model_runs_at_its_own_threshold_unless_config_overrides(trained, paths, window):
    v1_bytes, md = Registry(paths=paths).load_verified("v1")
    dep = trained.deployment
    own = trained.model_copy(update={"deployment": dep.model_copy(update={"threshold": None})})
    result = decide(settings=own, paths=paths, candidate_bytes=v1_bytes, window=window, candidate_threshold=0.3)
    assert result.threshold is None
    assert result.candidate.scores.threshold == 0.3
    assert result.serving.scores.threshold == md["decision"]["threshold"]
    fixed = trained.model_copy(update={"deployment": dep.model_copy(update={"threshold": 0.5})})
    forced = decide(settings=fixed, paths=paths, candidate_bytes=v1_bytes, window=window, candidate_threshold=0.3)
    assert forced.threshold == 0.5 == forced.candidate.scores.threshold == forced.serving.scores.threshold
