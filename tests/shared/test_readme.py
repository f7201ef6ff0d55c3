"""The README's example /predict answer is what the service answers for the README's reading (default config, v1)."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT


def _example() -> tuple[dict, dict]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"curl -s \$URL/predict -H 'content-type: application/json' -d '(\{.*?\})'\n# -> (\{.*?\})\n", text,
                  re.S)
    assert m, "README lost its /predict example"
    return json.loads(m.group(1)), json.loads(m.group(2))


def test_the_readme_example_answer_is_what_v1_answers(trained):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    body, shown = _example()
    with TestClient(create_app(trained, instance_id="readme-1", api_key=None)) as client:
        got = client.post("/predict", json=body).json()
    assert got["model_version"] == shown["model_version"] == "v1"
    assert got["prediction"] == shown["prediction"] and got["threshold"] == shown["threshold"]
    assert got["failure_probability"] == pytest.approx(shown["failure_probability"], abs=1e-6), (got, shown)
