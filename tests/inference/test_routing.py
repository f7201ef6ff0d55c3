"""DirectRoute: one refusal path (parse -> BadRequest -> JSON error) and every answer counted once, by the route."""
from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from services.inference.metrics import RouteMetrics
from services.inference.routing import DirectRoute, JSONBytes, parse

SNAKE = {"type": "M", "air_temperature_k": 298.1, "process_temperature_k": 308.6, "rotational_speed_rpm": 1551.0,
         "torque_nm": 42.8, "tool_wear_min": 0.0}


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


def tiny_app(counted: list, meter: RouteMetrics | None = None) -> FastAPI:
    async def post_item(request: Request) -> JSONBytes:
        item = await parse(request, Item, 100)
        return JSONBytes(b'{"n":%d}' % item.n, 200, meter)

    async def get_thing(request: Request, name: str) -> JSONBytes:
        if name == "boom":
            raise RuntimeError("boom")
        return JSONBytes(b'"%s"' % name.encode())

    app = FastAPI()
    count = (lambda route, status: counted.append((route, status))) if counted is not None else None
    app.router.routes += [DirectRoute("/items", post_item, methods=["POST"], body=Item, count=count),
                          DirectRoute("/things/{name}", get_thing, count=count)]
    return app


def test_refusals_are_json_errors_and_every_answer_is_counted():
    counted: list = []
    with TestClient(tiny_app(counted), raise_server_exceptions=False) as c:
        assert c.post("/items", json={"n": 3}).json() == {"n": 3}
        bad = c.post("/items", json={"n": "x"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "n"
        assert c.post("/items", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
        big = c.post("/items", json={"n": 1, "pad": "x" * 200})
        assert big.status_code == 413 and "max_body_bytes" in big.json()["detail"]
        assert c.get("/things/abc").json() == "abc"  # path parameters are passed by name
        assert c.get("/things/boom").status_code == 500
        assert c.get("/nowhere").status_code == 404  # not a route: not counted
    assert counted == [("/items", 200), ("/items", 422), ("/items", 400), ("/items", 413), ("/things", 200),
                       ("/things", 500)]


def test_an_answer_with_a_meter_is_recorded_there_with_its_time():
    counted: list = []
    meter = RouteMetrics("/items", "v1")
    with TestClient(tiny_app(counted, meter)) as c:
        c.post("/items", json={"n": 1})
        c.post("/items", json={"n": "x"})
    assert meter.ok == 1 and sum(meter.buckets) == 1 and meter.latency_sum > 0
    assert counted == [("/items", 422)]


def test_without_count_nothing_is_counted_and_refusals_still_answered():
    with TestClient(tiny_app(None)) as c:
        assert c.post("/items", json={"n": "x"}).status_code == 422


def test_openapi_is_built_from_the_declarations():
    spec = tiny_app([]).openapi()
    body = spec["paths"]["/items"]["post"]["requestBody"]
    assert body["required"] is True and body["content"]["application/json"]["schema"]["$ref"].endswith("/Item")
    assert spec["components"]["schemas"]["Item"]["additionalProperties"] is False
    param = spec["paths"]["/things/{name}"]["get"]["parameters"][0]
    assert (param["name"], param["in"], param["required"]) == ("name", "path", True)


def requests_counted(client) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "clockwork_inference_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[(s.labels["route"], s.labels["status"], s.labels["model_version"])] = s.value
    return {k: v for k, v in out.items() if v}


def test_the_service_counts_every_route_by_status_and_version(client):
    client.get("/health")
    client.get("/ready")
    client.get("/model")
    rid = client.post("/predict", json=SNAKE).json()["request_id"]
    client.post("/predict", json=dict(SNAKE, torque_nm="x"))
    client.post("/predict/batch", json={"readings": [SNAKE, SNAKE]})
    client.post("/predict/batch", json={"readings": []})
    client.post("/feedback", json={"request_id": rid, "label": 1})
    client.post("/feedback", json={"request_id": rid, "label": 5})
    client.get("/lineage/no-such-request")
    client.get("/lineage/" + "x" * 200)
    client.get("/metrics")
    client.get("/nowhere")
    assert requests_counted(client) == {
        ("/health", "200", "v1"): 1, ("/ready", "200", "v1"): 1, ("/model", "200", "v1"): 1,
        ("/predict", "200", "v1"): 1, ("/predict", "422", "v1"): 1,
        ("/predict/batch", "200", "v1"): 1, ("/predict/batch", "422", "v1"): 1,
        ("/feedback", "200", "v1"): 1, ("/feedback", "422", "v1"): 1,
        ("/lineage", "404", "v1"): 1, ("/lineage", "422", "v1"): 1,
    }
    text = client.get("/metrics").text
    assert 'clockwork_inference_request_latency_seconds_count{model_version="v1",route="/predict/batch"} 1.0' in text
    assert 'clockwork_inference_predictions_total{model_version="v1",prediction="0"} 3.0' in text


def test_server_errors_and_no_model_are_counted(served):
    from services.inference.app import create_app

    with TestClient(create_app(served, instance_id="boom"), raise_server_exceptions=False) as c:
        def broken(*_):
            raise RuntimeError("kaboom")

        c.app.state.service.holder.current.predict_row = broken
        assert c.post("/predict", json=SNAKE).status_code == 500
        assert requests_counted(c) == {("/predict", "500", "v1"): 1}
    settings = served.model_copy(update={"deployment": served.deployment.model_copy(update={"model_version": "v9"})})
    with TestClient(create_app(settings, instance_id="empty")) as c:
        assert c.post("/predict", json=SNAKE).status_code == 503
        assert c.get("/model").json()["detail"].startswith("no model is loaded: no model loaded; pinned v9 failed")
        c.get("/ready")
        assert requests_counted(c) == {("/predict", "503", "none"): 1, ("/model", "503", "none"): 1,
                                       ("/ready", "503", "none"): 1}


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/feedback"])
def test_body_routes_document_their_body_model(client, path):
    spec = client.get("/openapi.json").json()
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    assert name in {"Reading", "BatchRequest", "Feedback"} and name in spec["components"]["schemas"]
    assert set(spec["paths"][path]["post"]["responses"]) >= {"200", "400", "413", "422"}
