"""The console's web app: pages (GET, open to whoever reaches the loopback port) and actions (POST, keyed).

    GET  /  /registry  /registry/diff?a=vN&b=vM  /deployments  /data  /monitoring  /jobs  /lineage?request_id=
    GET  /reports/<report-*.html|json, latest.*>     the monitor's report files, served from reports_dir
    POST /actions/promote (version)  /actions/rollback  /actions/retrain (reason[, message_id])
         /actions/requeue (record: a dead-letter record as listed)

An action needs the API key (shared.config.api_key_from_env) in the form field `api_key` or the X-API-Key header:
without a configured key every action is refused (403), with a wrong one 401. Promote and rollback go through
shared.pin (the pin in config.yaml, a promote/rollback row in deployment_log.csv, as the inference CLI writes);
retrain and requeue through shared.queue.RetrainQueue.push (the job hash, then the message). A page only reads.
A crash leaves what those functions leave (each is atomic); the app itself writes nothing.
"""

from __future__ import annotations

import hmac
import logging
import socket
import uuid
from urllib.parse import parse_qs

import requests
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import ValidationError

from services.console import pages, pages_data
from services.console.html import page
from services.console.reader import ConsoleReader
from shared import pin
from shared.config import Settings
from shared.errors import ClockworkError, explain
from shared.lineage import lineage
from shared.paths import Paths
from shared.schemas import RetrainMessage, utc_now

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 1.0


def _redis_errors() -> tuple[type[Exception], ...]:
    import redis

    return (redis.RedisError, OSError)


def inference_ready(url: str) -> tuple[bool, str]:
    """(ready?, what to show) from GET <url>/ready; unreachable said plainly."""
    try:
        r = requests.get(f"{url}/ready", timeout=READY_TIMEOUT_S)
    except requests.RequestException as e:
        return False, f"UNREACHABLE ({type(e).__name__}: {e})"
    if r.status_code == 200:
        return True, "ready (200)"
    return False, f"NOT READY ({r.status_code}: {r.text[:200]})"


def create_app(settings: Settings, *, redis, api_key: str | None, inference_url: str | None = None) -> FastAPI:
    """The console for `settings`, reading Redis through `redis`; `api_key` None refuses every action."""
    paths = Paths.from_settings(settings)
    reader = ConsoleReader(paths=paths, redis=redis)
    url = (inference_url or settings.console.inference_url or settings.local_url).rstrip("/")
    actor = f"console-{socket.gethostname()}"
    app = FastAPI(title="Clockwork console", docs_url=None, redoc_url=None, openapi_url=None)

    def html(title: str, body: str, active: str, *, message: str = "", ok: bool = True, status: int = 200) -> Response:
        return HTMLResponse(page(title, body, active=active, message=message, ok=ok), status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def overview() -> Response:
        rows = reader.deployments()
        try:
            depth, jobs, redis_error = reader.queue_depth(), reader.jobs(), None
        except _redis_errors() as e:
            depth, jobs, redis_error = None, [], str(e)
        body = pages.overview(
            pin=pin.read_pin(settings.config_path),
            ready=inference_ready(url),
            inference_url=url,
            instances=reader.instances(rows),
            latest=reader.latest_report(),
            depth=depth,
            jobs=jobs,
            redis_error=redis_error,
        )
        return html("Overview", body, "/")

    @app.get("/registry", response_class=HTMLResponse)
    def registry() -> Response:
        rows = reader.versions()
        names = [r["version"] for r in rows]
        a, b = (names[-2], names[-1]) if len(names) > 1 else (None, None)
        body = pages.registry(rows, pin=pin.read_pin(settings.config_path), a=a, b=b)
        body += pages.rollback_form()
        return html("Registry", body, "/registry")

    @app.get("/registry/diff", response_class=HTMLResponse)
    def registry_diff(a: str, b: str) -> Response:
        try:
            body = pages.diff(a, reader.metadata(a), b, reader.metadata(b))
        except ClockworkError as e:
            return html("Registry diff", "", "/registry", message=str(e), ok=False, status=404)
        return html(f"Registry diff: {a} vs {b}", body, "/registry")

    @app.get("/deployments", response_class=HTMLResponse)
    def deployments() -> Response:
        return html("Deployments", pages.rollback_form() + pages.deployments(reader.deployments()), "/deployments")

    @app.get("/data", response_class=HTMLResponse)
    def data() -> Response:
        problems: list[str] = []
        entries = reader.manifest(problems)
        models_by_file: dict[tuple[str, str], list[str]] = {}
        for row in reader.versions():
            if "error" in row:
                continue
            for f in reader.metadata(row["version"]).get("data_files") or []:
                models_by_file.setdefault((f["path"], f["sha256"]), []).append(row["version"])
        body = pages_data.data(
            entries,
            raw_rel=reader.raw_rel(),
            raw_sha256=settings.dataset.raw_sha256,
            models_by_file=models_by_file,
            problems=problems,
        )
        return html("Data lineage", body, "/data")

    @app.get("/monitoring", response_class=HTMLResponse)
    def monitoring() -> Response:
        return html("Monitoring", pages_data.monitoring(reader.reports()), "/monitoring")

    @app.get("/reports/{name}")
    def report_file(name: str) -> Response:
        path = reader.report_file(name)
        if path is None:
            return html("Report", "", "/monitoring", message=f"no such report: {name}", ok=False, status=404)
        return FileResponse(path, media_type="text/html" if name.endswith(".html") else "application/json")

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs() -> Response:
        try:
            body = pages.jobs(depth=reader.queue_depth(), items=reader.jobs(), dead=reader.dead_letters())
        except _redis_errors() as e:
            return html("Jobs", "", "/jobs", message=f"Redis unreachable: {e}", ok=False, status=503)
        return html("Jobs", body, "/jobs")

    @app.get("/lineage", response_class=HTMLResponse)
    def lineage_page(request_id: str = "") -> Response:
        request_id = request_id.strip()
        chain, error = None, None
        if request_id:
            try:
                chain = lineage(paths, request_id)
            except ClockworkError as e:
                error = str(e)
        return html("Lineage", pages.lineage(request_id, chain, error), "/lineage", status=404 if error else 200)

    # --- actions (keyed) --------------------------------------------------------------------
    async def form_of(request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", errors="replace")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def refused(form: dict[str, str], request: Request) -> Response | None:
        given = request.headers.get("x-api-key") or form.get("api_key") or ""
        if api_key is None:
            msg = "actions are disabled: no API key is configured (set CLOCKWORK_API_KEY or CLOCKWORK_API_KEY_FILE)"
            return html("Refused", "", "/", message=msg, ok=False, status=403)
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            return html("Refused", "", "/", message="refused: missing or wrong API key", ok=False, status=401)
        return None

    def done(title: str, message: str, back: str, *, ok: bool = True, status: int = 200) -> Response:
        log.info("console action: %s: %s", title, message) if ok else log.warning("console %s: %s", title, message)
        body = f"<p><a href='{back}'>back</a></p>"
        return html(title, body, back, message=message, ok=ok, status=status)

    @app.post("/actions/promote")
    async def promote(request: Request) -> Response:
        form = await form_of(request)
        if (no := refused(form, request)) is not None:
            return no
        version = form.get("version", "")
        try:
            previous = pin.set_pin(
                settings.config_path,
                version,
                paths=paths,
                event="promote",
                actor=actor,
                detail="promoted from the console",
            )
        except ClockworkError as e:
            return done("Promote", f"promote {version} refused: {e}", "/registry", ok=False, status=400)
        if previous == version:
            return done("Promote", f"{version} is already pinned; nothing changed", "/registry")
        return done(
            "Promote",
            f"pinned {version} (was {previous}); inference swaps within {settings.deployment.reload_interval_s:g} s",
            "/registry",
        )

    @app.post("/actions/rollback")
    async def rollback(request: Request) -> Response:
        form = await form_of(request)
        if (no := refused(form, request)) is not None:
            return no
        try:
            current, target = pin.rollback(settings.config_path, paths=paths, actor=actor)
        except ClockworkError as e:
            return done("Rollback", f"rollback refused: {e}", "/deployments", ok=False, status=400)
        return done("Rollback", f"rolled back: pinned {target} (was {current})", "/deployments")

    @app.post("/actions/retrain")
    async def retrain(request: Request) -> Response:
        form = await form_of(request)
        if (no := refused(form, request)) is not None:
            return no
        mid = form.get("message_id", "").strip() or f"console-{utc_now().replace(':', '')}-{uuid.uuid4().hex[:6]}"
        try:
            message = RetrainMessage(id=mid, reason=form.get("reason", "").strip(), created_at=utc_now())
            reader.queue.push(message)
        except ValidationError as e:
            return done("Retrain", f"retrain message refused: {explain(e)}", "/jobs", ok=False, status=400)
        except ClockworkError as e:
            return done("Retrain", f"retrain message refused: {e}", "/jobs", ok=False, status=400)
        except _redis_errors() as e:
            return done("Retrain", f"Redis unreachable: {e}", "/jobs", ok=False, status=503)
        return done("Retrain", f"pushed retrain message {message.id}", "/jobs")

    @app.post("/actions/requeue")
    async def requeue(request: Request) -> Response:
        form = await form_of(request)
        if (no := refused(form, request)) is not None:
            return no
        record = form.get("record", "")
        try:
            return _requeue(record)
        except _redis_errors() as e:
            return done("Requeue", f"Redis unreachable: {e}", "/jobs", ok=False, status=503)

    def _requeue(record: str) -> Response:
        entry = next((d for d in reader.dead_letters() if d["_record"] == record), None)
        if entry is None:
            return done("Requeue", "no such dead letter (already requeued?)", "/jobs", ok=False, status=404)
        try:
            message = reader.queue.parse(str(entry.get("raw", "")))
        except ClockworkError as e:
            return done("Requeue", f"cannot requeue: the message is still invalid: {e}", "/jobs", ok=False, status=400)
        reader.queue.push(message)
        reader.redis.lrem(reader.keys.dead_letter_queue, 1, record)
        return done("Requeue", f"requeued {message.id} from the dead letters", "/jobs")

    return app
