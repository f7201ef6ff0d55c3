"""Validation-only baselines for the inference benchmark: the same body, the same validation, no model.

  direct   the service's own route mechanism (DirectRoute, routing.parse: capped body read, pydantic JSON
           validation of the same Reading model; no metrics) answering a constant prediction-shaped JSON:
           the fastest we could write
  fastapi  idiomatic FastAPI: `async def predict(reading: Reading) -> Prediction` (body parameter and
           response_model), for reference

python -m bench.baseline_app --config PATH --port N --variant direct|fastapi
Served with the service's own uvicorn settings (services.inference.__main__.uvicorn_config).
"""

# No `from __future__ import annotations`: FastAPI must see the Reading class built at run time.
import argparse
import sys

import orjson
from fastapi import FastAPI, Request

from services.inference import schemas
from services.inference.reading import ReadingSchema
from services.inference.routing import DirectRoute, JSONBytes, parse
from shared.config import Settings, load_settings_or_exit

VARIANTS = ("direct", "fastapi")
ANSWER = orjson.dumps(
    {
        "request_id": "0000000000000000-0000001",
        "model_version": "v0",
        "failure_probability": 0.0123,
        "prediction": 0,
        "threshold": 0.5,
    }
)


def create_baseline_app(settings: Settings, *, variant: str) -> FastAPI:
    Reading = ReadingSchema.build(settings.dataset).model
    limit = settings.deployment.max_body_bytes
    app = FastAPI(title=f"validation-only baseline ({variant})")
    if variant == "direct":

        async def predict(request: Request) -> JSONBytes:
            await parse(request, Reading, limit)  # a refusal (BadRequest) is answered by DirectRoute
            return JSONBytes(ANSWER)

        app.router.routes.append(DirectRoute("/predict", predict, methods=["POST"], body=Reading))
    elif variant == "fastapi":

        @app.post("/predict", response_model=schemas.Prediction)
        async def predict(reading: Reading) -> schemas.Prediction:  # type: ignore[valid-type]
            return schemas.Prediction(
                request_id="0000000000000000-0000001",
                model_version="v0",
                failure_probability=0.0123,
                prediction=0,
                threshold=0.5,
            )
    else:
        raise ValueError(f"unknown baseline variant {variant!r}; expected one of {VARIANTS}")
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_app")
    parser.add_argument("--config")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="direct")
    args = parser.parse_args(argv)
    settings = load_settings_or_exit(args.config)
    from services.inference.__main__ import serve

    return 0 if serve(create_baseline_app(settings, variant=args.variant), host=args.host, port=args.port) else 3


if __name__ == "__main__":
    sys.exit(main())
