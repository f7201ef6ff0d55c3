"""Fuzzing the OpenAPI schema (schemathesis, valid and invalid bodies) finds no 5xx, over real HTTP.

Driven through Hypothesis directly (one strategy per operation and generation mode): schemathesis'
pytest fixture loader does not run under this pytest version.
"""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

MAX_EXAMPLES = 40  # per operation and mode: every kind of bad field shows up, and it stays quick


def test_fuzzed_requests_never_get_a_server_error(live):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /predict", "POST /predict/batch", "POST /feedback", "GET /ready"} <= labels
    server_errors = []
    calls = {"n": 0}
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call(base_url=live.url, timeout=10)
                calls["n"] += 1
                calls[(op.label, response.status_code)] = calls.get((op.label, response.status_code), 0) + 1
                if response.status_code >= 500:
                    server_errors.append((op.label, mode.value, case.body, response.status_code, response.text[:300]))

            try:
                fuzz()
            except Unsatisfiable:
                # nothing invalid can be sent to an operation without parameters or body (GET /health ...)
                assert mode is GenerationMode.NEGATIVE and op.method.upper() == "GET", op.label
    assert not server_errors, server_errors[:5]
    assert calls["n"] > 100
    for route in ("POST /predict", "POST /predict/batch", "POST /feedback"):  # valid and invalid bodies both sent
        assert calls.get((route, 200)) and calls.get((route, 422)), calls
