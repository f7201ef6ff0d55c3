"""Prometheus metrics of one app (its own CollectorRegistry, so several apps can live in one process).

The per-request series (requests by route/status/version, the latency histogram, predictions by
class) are plain integers kept by the event loop thread and turned into Prometheus families when
/metrics is scraped: a request pays a few additions instead of prometheus_client's locked
`inc()`/`observe()` (a few microseconds, which is a visible share of a ~100 us request). So are
the ONNX call and row counts of the coalesced /predict path. The rare events (swaps, failed swaps,
config errors, shadow failures) use prometheus_client's own counters; the live shadow's rows are a plain
integer like the ONNX counts.
`clockwork_inference_instance{instance_id="..."} 1` names the instance (process) whose numbers these are: with
deployment.workers > 1 each scrape is answered by one of them (its own counters, not the sum).
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
NO_MODEL = "none"


class RouteMetrics:
    """Counters of one route for one model version, updated on the event loop thread only."""

    __slots__ = ("route", "version", "ok", "predicted", "buckets", "latency_sum")

    def __init__(self, route: str, version: str) -> None:
        self.route = route
        self.version = version
        self.ok = 0
        self.predicted = [0, 0]  # by predicted class
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # last one: above the largest bound
        self.latency_sum = 0.0

    def observe(self, seconds: float) -> None:
        """One answered request (2xx) and its handler time."""
        self.ok += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class _RequestCollector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        m = self.metrics
        requests = CounterMetricFamily(
            "clockwork_inference_requests",
            "HTTP requests answered, by route, status and model version",
            labels=["route", "status", "model_version"],
        )
        latency = HistogramMetricFamily(
            "clockwork_inference_request_latency_seconds",
            "Time spent in the route handler, answered (2xx) requests",
            labels=["route", "model_version"],
        )
        predictions = CounterMetricFamily(
            "clockwork_inference_predictions",
            "Predictions made, by model version and predicted class",
            labels=["model_version", "prediction"],
        )
        by_class: dict[str, list[int]] = {}
        for rm in list(m.routes.values()):
            requests.add_metric([rm.route, "200", rm.version], rm.ok)
            cumulative, out = 0, []
            for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), rm.buckets, strict=False):
                cumulative += n
                out.append((bound, cumulative))
            latency.add_metric([rm.route, rm.version], out, rm.latency_sum)
            if rm.route.startswith("/predict"):
                totals = by_class.setdefault(rm.version, [0, 0])
                totals[0] += rm.predicted[0]
                totals[1] += rm.predicted[1]
        for (route, status, version), n in list(m.other_statuses.items()):
            requests.add_metric([route, str(status), version], n)
        for version, (zero, one) in by_class.items():
            predictions.add_metric([version, "0"], zero)
            predictions.add_metric([version, "1"], one)
        yield requests
        yield latency
        yield predictions
        yield CounterMetricFamily(
            "clockwork_inference_onnx_runs",
            "ONNX calls made for single-row /predict requests (rows of requests waiting together run as one call)",
            value=m.onnx_runs,
        )
        yield CounterMetricFamily("clockwork_inference_onnx_rows", "Rows predicted by those calls", value=m.onnx_rows)
        yield CounterMetricFamily(
            "clockwork_shadow_rows",
            "Rows the live shadow (deployment.shadow_version) scored and logged beside the served answer",
            value=m.shadow_rows,
        )


class Metrics:
    def __init__(self, instance_id: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if instance_id is not None:
            info = Gauge(
                "clockwork_inference_instance",
                "1, labelled with the instance (process or replica) whose metrics these are",
                ["instance_id"],
                registry=r,
            )
            info.labels(instance_id).set(1)
        self.routes: dict[tuple[str, str], RouteMetrics] = {}
        self.other_statuses: dict[tuple[str, int, str], int] = {}
        r.register(_RequestCollector(self))
        self.swap_failures = Counter(
            "clockwork_inference_swap_failures", "Model loads that failed (old model kept serving)", registry=r
        )
        self.swaps = Counter("clockwork_inference_swaps", "Successful model swaps", registry=r)
        self.config_errors = Counter(
            "clockwork_inference_config_errors", "config.yaml edits that did not validate", registry=r
        )
        self.onnx_runs = 0  # ONNX calls for single-row /predict requests (exposed by the collector)
        self.onnx_rows = 0  # rows those calls predicted
        self.shadow_rows = 0  # rows the live shadow scored (exposed by the collector)
        self.shadow_errors = Counter(
            "clockwork_shadow_errors",
            "Batches the live shadow failed to score (left out of their log lines; the requests were answered)",
            registry=r,
        )
        self.shadow_load_failures = Counter(
            "clockwork_shadow_load_failures", "Shadow versions that failed to load (serving went on)", registry=r
        )
        self.shadow = Gauge(
            "clockwork_shadow_model", "1 for the live shadow version loaded", ["model_version", "onnx_sha256"],
            registry=r,
        )
        self.serving = Gauge(
            "clockwork_inference_serving_model",
            "1 for the model version being served",
            ["model_version", "onnx_sha256"],
            registry=r,
        )
        self.ready = Gauge("clockwork_inference_ready", "1 when a checked model is loaded", registry=r)

    def route(self, route: str, version: str) -> RouteMetrics:
        """The counters of `route` for `version` (created once, then cached by the caller)."""
        key = (route, version)
        found = self.routes.get(key)
        if found is None:
            found = self.routes[key] = RouteMetrics(route, version)
        return found

    def count(self, route: str, status: int, version: str) -> None:
        """A request answered without a RouteMetrics at hand (refusals, errors, ops routes)."""
        key = (route, status, version)
        self.other_statuses[key] = self.other_statuses.get(key, 0) + 1

    def set_serving(self, version: str, sha256: str, previous: tuple[str, str] | None) -> None:
        if previous is not None:
            try:
                self.serving.remove(*previous)
            except KeyError:
                pass
        self.serving.labels(version, sha256).set(1)
        self.ready.set(1)

    def set_shadow(self, current: tuple[str, str] | None, previous: tuple[str, str] | None) -> None:
        """The shadow gauge: `current` (version, sha256) loaded, `previous` unloaded (either may be None)."""
        if previous is not None:
            try:
                self.shadow.remove(*previous)
            except KeyError:
                pass
        if current is not None:
            self.shadow.labels(*current).set(1)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
