"""Smoke tests against a running inference API: exit code 0 if all three pass, 1 otherwise.

  python -m services.inference.smoke --url http://127.0.0.1:8000

The reading sent is the example of the service's own document (GET /openapi.json, the `Reading` schema's first
example, built from the dataset section the service loaded; without one, the middle of each documented range
and the first level of each enum). So the smoke test needs nothing but the URL, works against any data set, and
cannot send the columns of a config other than the one the service runs with (a container's config.yaml is not
the host's); a document whose example the service refuses fails it too.

1. status code      POST /predict with a valid reading answers 200 (and GET /ready answers 200)
2. response structure  the answer has request_id, model_version, failure_probability, prediction, threshold
3. prediction types    probability a float in [0, 1], prediction 0 or 1 and equal to (probability >= threshold),
                       model_version like v3, request_id a non-empty string
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from collections.abc import Callable

import requests

from shared.config import load_settings
from shared.errors import ConfigError

log = logging.getLogger("services.inference.smoke")

FIELDS = ("request_id", "model_version", "failure_probability", "prediction", "threshold")


class SmokeFailure(Exception):
    pass


def document_reading(doc: dict) -> dict:
    """A valid reading from an OpenAPI document: the Reading schema's first example, else one built from its
    properties (the middle of each numeric range, the first of each enum)."""
    try:
        schema = doc["components"]["schemas"]["Reading"]
        examples = schema.get("examples") or []
        if examples and isinstance(examples[0], dict):
            return examples[0]
        reading = {}
        for name, prop in schema["properties"].items():
            if "enum" in prop:
                reading[name] = prop["enum"][0]
            else:
                reading[name] = (float(prop["minimum"]) + float(prop["maximum"])) / 2
        return reading
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise SmokeFailure(f"GET /openapi.json: no Reading schema to build a reading from ({e!r})") from e


class Smoke:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self._answer: dict | None = None
        self._reading: dict | None = None

    def reading(self) -> dict:
        """The document's example reading (fetched once)."""
        if self._reading is None:
            r = self.session.get(f"{self.url}/openapi.json", timeout=self.timeout)
            if r.status_code != 200:
                raise SmokeFailure(f"GET /openapi.json answered {r.status_code}: {r.text[:300]}")
            try:
                doc = r.json()
            except ValueError as e:
                raise SmokeFailure(f"GET /openapi.json did not answer JSON: {r.text[:300]!r}") from e
            self._reading = document_reading(doc)
        return self._reading

    def predict(self) -> dict:
        if self._answer is None:
            r = self.session.post(f"{self.url}/predict", json=self.reading(), timeout=self.timeout)
            if r.status_code != 200:
                raise SmokeFailure(f"POST /predict answered {r.status_code}: {r.text[:300]}")
            try:
                self._answer = r.json()
            except ValueError as e:
                raise SmokeFailure(f"POST /predict did not answer JSON: {r.text[:300]!r}") from e
        return self._answer

    def test_status_code(self) -> str:
        r = self.session.get(f"{self.url}/ready", timeout=self.timeout)
        if r.status_code != 200:
            raise SmokeFailure(f"GET /ready answered {r.status_code}: {r.text[:300]}")
        r = self.session.post(f"{self.url}/predict", json=self.reading(), timeout=self.timeout)
        if r.status_code != 200:
            raise SmokeFailure(f"POST /predict answered {r.status_code}: {r.text[:300]}")
        return f"GET /ready and POST /predict answer 200 (reading of {len(self.reading())} fields from /openapi.json)"

    def test_response_structure(self) -> str:
        answer = self.predict()
        if not isinstance(answer, dict):
            raise SmokeFailure(f"answer is not a JSON object: {answer!r}")
        missing = [f for f in FIELDS if f not in answer]
        if missing:
            raise SmokeFailure(f"answer lacks {missing}: {answer}")
        return f"answer has {', '.join(FIELDS)}"

    def test_prediction_types(self) -> str:
        a = self.predict()
        p, label, threshold = a.get("failure_probability"), a.get("prediction"), a.get("threshold")
        if not (isinstance(p, float) and math.isfinite(p) and 0.0 <= p <= 1.0):
            raise SmokeFailure(f"failure_probability must be a float in [0, 1], got {p!r}")
        if not (type(label) is int and label in (0, 1)):
            raise SmokeFailure(f"prediction must be the integer 0 or 1, got {label!r}")
        if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0):
            raise SmokeFailure(f"threshold must be a number in [0, 1], got {threshold!r}")
        if label != int(p >= threshold):
            raise SmokeFailure(f"prediction {label} disagrees with probability {p} and threshold {threshold}")
        if not (isinstance(a.get("model_version"), str) and re.fullmatch(r"v[0-9]+", a["model_version"])):
            raise SmokeFailure(f"model_version must look like v3, got {a.get('model_version')!r}")
        if not (isinstance(a.get("request_id"), str) and a["request_id"]):
            raise SmokeFailure(f"request_id must be a non-empty string, got {a.get('request_id')!r}")
        return f"{a['model_version']}: probability {p:.4f} -> prediction {label} at threshold {threshold}"

    def tests(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("status code", self.test_status_code),
            ("response structure", self.test_response_structure),
            ("prediction types", self.test_prediction_types),
        ]


def run(url: str, *, timeout: float = 10.0) -> bool:
    """Run the three smoke tests; log one line per test; True if all passed."""
    smoke = Smoke(url, timeout)
    passed = 0
    tests = smoke.tests()
    for name, test in tests:
        try:
            detail = test()
        except (SmokeFailure, requests.RequestException) as e:
            log.error("FAIL %s: %s", name, e)
        else:
            passed += 1
            log.info("PASS %s: %s", name, detail)
    log.info("%d/%d smoke tests passed against %s", passed, len(tests), url)
    return passed == len(tests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.inference.smoke", description="Smoke-test a running inference API."
    )
    parser.add_argument(
        "--url", help="base URL of the API (default: this host's service of --config, so CLOCKWORK_PORT moves it)"
    )
    parser.add_argument("--config", help="config.yaml path (default: $CLOCKWORK_CONFIG or ./config.yaml)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    url = args.url
    if url is None:
        try:
            url = load_settings(args.config).local_url
        except ConfigError as e:
            log.error("no --url given and the config does not load: %s", e)
            return 2
    return 0 if run(url, timeout=args.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
