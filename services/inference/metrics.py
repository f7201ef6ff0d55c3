"""Prometheus metrics of one app (its own CollectorRegistry, so several apps can live in one process).

Labelled children are created once per (route, model version) and cached: a request pays an `inc()`
and an `observe()`, not a label lookup.
"""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
NO_MODEL = "none"


@dataclass(frozen=True)
class RouteMetrics:
    """Cached children for one route and one model version."""

    ok: object  # Counter child: requests answered 2xx
    latency: object  # Histogram child
    predicted: tuple  # (class 0 counter, class 1 counter)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("clockwork_inference_requests", "HTTP requests answered, by route, status and model version",
                                ["route", "status", "model_version"], registry=r)
        self.latency = Histogram("clockwork_inference_request_latency_seconds", "Time spent in the route handler",
                                 ["route", "model_version"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("clockwork_inference_predictions", "Predictions made, by model version and predicted class",
                                   ["model_version", "prediction"], registry=r)
        self.swap_failures = Counter("clockwork_inference_swap_failures", "Model loads that failed (old model kept serving)",
                                     registry=r)
        self.swaps = Counter("clockwork_inference_swaps", "Successful model swaps", registry=r)
        self.config_errors = Counter("clockwork_inference_config_errors", "config.yaml edits that did not validate",
                                     registry=r)
        self.onnx_runs = Counter("clockwork_inference_onnx_runs", "ONNX calls made for single-row /predict requests "
                                 "(rows of requests waiting together run as one call)", registry=r)
        self.onnx_rows = Counter("clockwork_inference_onnx_rows", "Rows predicted by those calls", registry=r)
        self.serving = Gauge("clockwork_inference_serving_model", "1 for the model version being served",
                             ["model_version", "onnx_sha256"], registry=r)
        self.ready = Gauge("clockwork_inference_ready", "1 when a checked model is loaded", registry=r)
        self._cache: dict[tuple[str, str], RouteMetrics] = {}

    def route(self, route: str, version: str) -> RouteMetrics:
        key = (route, version)
        found = self._cache.get(key)
        if found is None:
            found = RouteMetrics(
                ok=self.requests.labels(route, "200", version),
                latency=self.latency.labels(route, version),
                predicted=(self.predictions.labels(version, "0"), self.predictions.labels(version, "1")),
            )
            self._cache[key] = found
        return found

    def error(self, route: str, status: int, version: str) -> None:
        self.requests.labels(route, str(status), version).inc()

    def set_serving(self, version: str, sha256: str, previous: tuple[str, str] | None) -> None:
        if previous is not None:
            try:
                self.serving.remove(*previous)
            except KeyError:
                pass
        self.serving.labels(version, sha256).set(1)
        self.ready.set(1)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
