"""The gate consults the shadow (services.trainer.shadow_veto): a candidate whose expected cost on the labelled logged
traffic is worse than what was served there, by more than monitoring.gate.shadow_cost_margin, is kept even when the
bootstrap says promote; with too few labelled shadow rows the bootstrap decides; the figures are in `gate.shadow`."""
from __future__ import annotations

import numpy as np
import pytest

from services.trainer.decision import Costs
from services.trainer.gate import decide
from services.trainer.shadow import compare_with_truth
from services.trainer.shadow_veto import shadow_check
from shared.paths import Paths
from shared.registry import Registry
from tests.ai4i import LABEL
from tests.trainer.test_gate import Oracle, window, with_gate  # noqa: F401  (window: the gate's fixture)
from tests.trainer.test_shadow import LABELLED, ROWS, traffic  # noqa: F401  (traffic: logged + labelled rows)


@pytest.fixture
def paths(trained):
    return Paths.from_settings(trained)


def shadow_record(settings, *, truth, candidate, served) -> dict:
    """A shadow record (as retrain.run_shadow stores it) over labelled logged rows with these decisions."""
    ids = [f"r{i}" for i in range(len(truth))]
    labelled = compare_with_truth(
        dict(zip(ids, truth, strict=True)),
        costs=Costs.from_config(settings.decision),
        source="test",
        ids=ids,
        candidate=np.asarray(candidate, dtype=bool),
        served=np.asarray(served, dtype=bool),
    )
    differ = int((np.asarray(candidate) != np.asarray(served)).sum())
    return {
        "status": "ok",
        "reason": "test",
        "version": "candidate",
        "threshold": 0.5,
        "window": {"rows": len(ids), "first_time": "t0", "last_time": "t1", "served_versions": {"v1": len(ids)},
                   "instances": ["i"], "skipped_lines": 0},
        "agreement": 1 - differ / len(ids),
        "disagreements": differ,
        "labelled": labelled.model_dump(mode="json"),
    }


def oracle_scorer(settings, window):
    from shared.onnx_model import load_session

    def scorer(model_bytes, *, name):
        if model_bytes == b"oracle":
            return Oracle(window[LABEL])
        return load_session(model_bytes, name=name, features=settings.dataset.feature_names)

    return scorer


def test_a_candidate_the_bootstrap_promotes_is_kept_when_its_shadow_cost_is_worse(trained, paths, window):
    truth = np.array([1] * 10 + [0] * 190)
    # on the logged traffic the candidate misses 4 failures production caught: 4 * 500 / 200 rows = +10 per reading
    cand = truth.copy()
    cand[:4] = 0
    worse = shadow_check(trained.monitoring.gate, shadow_record(trained, truth=truth, candidate=cand, served=truth))
    assert worse.verdict == "veto" and worse.labelled_rows == 200 and worse.labelled_positives == 10
    assert worse.candidate_cost == pytest.approx(1000 * 4 * trained.decision.cost_missed_failure / 200)
    assert worse.served_cost == 0.0 and worse.cost_difference == worse.candidate_cost
    scorer = oracle_scorer(trained, window)
    alone = decide(settings=trained, paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer)
    assert alone.decision == "promote" and alone.shadow is None
    kept = decide(settings=trained, paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer, shadow=worse)
    assert kept.decision == "keep" and kept.interval == alone.interval
    assert "shadow: candidate expected cost" in kept.reason and "shadow_cost_margin" in kept.reason
    assert f"{worse.candidate_cost:.2f}" in kept.reason and "200 labelled logged rows" in kept.reason
    assert kept.model_dump(mode="json")["shadow"] == worse.model_dump(mode="json")
    # within the margin (one extra false alarm: +50 per 1,000 at a margin of 100) it passes and the bootstrap decides
    alarm = truth.copy()
    alarm[10] = 1
    roomy = with_gate(trained, shadow_cost_margin=100.0)
    near = shadow_check(roomy.monitoring.gate, shadow_record(trained, truth=truth, candidate=alarm, served=truth))
    assert near.verdict == "pass"
    assert decide(settings=roomy, paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer,
                  shadow=near).decision == "promote"
    # the veto switched off: figures recorded, not used
    off = with_gate(trained, shadow_veto=False)
    unused = shadow_check(off.monitoring.gate, shadow_record(trained, truth=truth, candidate=cand, served=truth))
    assert unused.verdict == "off" and unused.candidate_cost == worse.candidate_cost
    assert decide(settings=off, paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer,
                  shadow=unused).decision == "promote"


def test_too_few_labelled_shadow_rows_leave_the_decision_to_the_bootstrap(trained, paths, window):
    gate = trained.monitoring.gate
    truth = np.array([1] * (gate.min_positives - 1) + [0] * 100)
    record = shadow_record(trained, truth=truth, candidate=np.zeros_like(truth), served=truth)
    few = shadow_check(gate, record)
    assert few.verdict == "not_enough" and few.candidate_cost is None
    assert f"not enough labelled rows ({len(truth)} rows, {gate.min_positives - 1} failures" in few.reason
    scorer = oracle_scorer(trained, window)
    result = decide(settings=trained, paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer, shadow=few)
    assert result.decision == "promote" and "shadow: not enough labelled rows" in result.reason
    for failed in ({"status": "error", "reason": "shadow evaluation could not run: x"},
                   {"status": "no_traffic", "reason": "no logged traffic", "window": {"rows": 0}}):
        check = shadow_check(gate, failed)
        assert check.verdict == "not_enough" and "(0 rows, 0 failures" in check.reason
        assert failed["reason"] in check.reason
        assert decide(settings=trained, paths=paths, candidate_bytes=b"oracle", window=window, scorer=scorer,
                      shadow=check).decision == "promote"


def test_the_retrain_gate_uses_the_shadow_deterministically_and_a_retry_decides_the_same(served, traffic, monkeypatch):
    """Logged traffic served by v1 (400 of 600 rows labelled); the labelled rows are the gate's window too."""
    from services.trainer import retrain
    from shared.pin import read_pin
    from shared.schemas import RetrainMessage
    from tests.trainer.helpers import with_config

    settings = with_config(served, **{"monitoring.gate.margin": 0.0, "monitoring.gate.shadow_cost_margin": 0.0})
    recorded: dict[str, str] = {}

    def record(**fields):
        recorded.update({k: str(v) for k, v in fields.items()})

    def crash(*a, **k):
        raise RuntimeError("killed between the decision and the registration")

    real_register = retrain.register_once
    monkeypatch.setattr(retrain, "register_once", crash)
    with pytest.raises(RuntimeError):
        retrain.run_retrain(settings, RetrainMessage(id="shadow-gate", reason="t"), record=record)
    first = dict(recorded)
    # the candidate decides as v1 did (margin 0: at least as good is promoted), on the window and in the shadow
    assert first["gate_decision"] == "promote" and "; shadow: " in first["gate_reason"]
    monkeypatch.setattr(retrain, "register_once", real_register)
    monkeypatch.setattr(retrain, "set_pin", crash)  # and killed between the registration and the pin
    with pytest.raises(RuntimeError):
        retrain.run_retrain(settings, RetrainMessage(id="shadow-gate", reason="t"), recorded=recorded, record=record)
    # the retry reached the same decision on the same logs, shadow figures and all
    assert {k: recorded[k] for k in first} == first
    registry = Registry(paths=Paths.from_settings(settings))
    version = recorded["version"]
    gate = registry.metadata(version)["gate"]
    shadow = gate["shadow"]
    assert shadow["status"] == "ok" and shadow["window_rows"] == ROWS and shadow["labelled_rows"] == LABELLED
    assert shadow["verdict"] == "pass" and shadow["cost_difference"] == 0.0 and shadow["reason"] in gate["reason"]
    assert shadow["candidate_cost"] == registry.metadata(version)["shadow"]["labelled"]["candidate"][
        "expected_cost_per_1000"]
    # the third attempt resumes from the registry: the recorded decision (with its shadow figures) is completed
    monkeypatch.undo()
    result = retrain.run_retrain(settings, RetrainMessage(id="shadow-gate", reason="t"), recorded=recorded)
    assert not result.created and result.version == version
    assert result.promoted and read_pin(settings.config_path) == version
    assert result.gate.shadow.model_dump(mode="json") == shadow
