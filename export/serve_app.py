"""The HTTP layer of the face-recognition service: a FastAPI app around an
``export.face_service.FaceService`` (``python -m export.serve`` runs it with uvicorn).

Endpoints (docs/SERVING.md has curl examples): ``GET /`` (the web page), ``GET /healthz``,
``GET /metrics``, ``POST /v1/embed``, ``POST /v1/verify``, ``POST /v1/identify``,
``GET /v1/gallery``, ``POST /v1/gallery/{identity}``, ``DELETE /v1/gallery/{identity}``.
Images come as ``multipart/form-data`` parts; every image endpoint takes ``?align=true``.

Every error is JSON ``{"error": "..."}`` with a 4xx status that says what was wrong (5xx only
for the service's own failures). A request body over the limit is cut off while it streams in
(413), before it is parsed. With a token, the write endpoints (enrol, delete) want
``Authorization: Bearer <token>`` (401 otherwise).

FastAPI and uvicorn are the ``[serve]`` extra: they are imported by :func:`create_app` only.
"""

import hmac
import time
import urllib.parse

from export import serve_metrics, serve_page
from export.face_service import ServiceError

GALLERY_PREFIX = "/v1/gallery/"
MAX_TOP_K = 100
_ENDPOINTS = ("/v1/embed", "/v1/verify", "/v1/identify", "/v1/gallery", "/healthz", "/metrics")


def endpoint_label(path):
    """The metrics label of a request path (the route, not the identity in it)."""
    if path == "/":
        return "/"
    for endpoint in _ENDPOINTS:
        if path == endpoint or path.startswith(endpoint + "/"):
            return endpoint + ("/{identity}" if path.startswith(GALLERY_PREFIX) else "")
    return "other"


class _BodyTooLarge(Exception):
    pass


class RequestGuard:
    """ASGI middleware: the request-size limit (Content-Length, then the bytes actually
    received) and the request metrics. Errors it answers itself are JSON too."""

    def __init__(self, app, max_bytes, metrics):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        state = {"status": 500, "sent": False, "received": 0}

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                state["status"], state["sent"] = message["status"], True
            await send(message)

        async def receive_limited():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        length = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                raise _BodyTooLarge()
            await self.app(scope, receive_limited, send_tracked)
        except _BodyTooLarge:
            if not state["sent"]:
                await _send_json(send_tracked, 413, {"error": (
                    f"the request is larger than the limit of {self.max_bytes} bytes")})
        finally:
            self.metrics.observe_request(endpoint_label(scope.get("path", "")),
                                         state["status"], time.monotonic() - started)


async def _send_json(send, status, payload):
    import json  # noqa: PLC0415

    body = json.dumps(payload).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii")),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def parse_align(value):
    """``?align=`` as True/False/None (absent: the service's default)."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ServiceError(400, f"align must be true or false, got {value!r}")


def parse_top_k(value, default=5):
    if value is None:
        return default
    try:
        top_k = int(value)
    except ValueError:
        raise ServiceError(400, f"top_k must be an integer, got {value!r}") from None
    if not 1 <= top_k <= MAX_TOP_K:
        raise ServiceError(400, f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    return top_k


def identity_from_path(scope):
    """The identity of a ``/v1/gallery/<identity>`` request, decoded from the raw path (so
    percent-encoded bytes that are not UTF-8 are refused instead of silently replaced)."""
    raw = scope.get("raw_path")
    if raw is None:
        raw = scope["path"].encode("utf-8")
    raw = raw.split(b"?", 1)[0]
    if not raw.startswith(GALLERY_PREFIX.encode("ascii")):
        raise ServiceError(404, "not found")
    encoded = raw[len(GALLERY_PREFIX):]
    try:
        return urllib.parse.unquote_to_bytes(encoded).decode("utf-8")
    except UnicodeDecodeError:
        raise ServiceError(400, "the identity name in the URL is not valid UTF-8") from None


def _register_identity_convertor():
    """``{identity:identity}``: the rest of the path, newlines included (Starlette's ``path``
    stops at one, which would answer 404 where the name is what is wrong: 400)."""
    from starlette import convertors  # noqa: PLC0415

    class IdentityConvertor(convertors.PathConvertor):
        regex = "(?s:.*)"

    if "identity" not in convertors.CONVERTOR_TYPES:
        convertors.register_url_convertor("identity", IdentityConvertor())


def create_app(service, token=None, metrics=None):
    """The FastAPI app serving ``service`` (see the module docstring)."""
    from fastapi import FastAPI, Request  # noqa: PLC0415 - the [serve] extra
    from fastapi.concurrency import run_in_threadpool  # noqa: PLC0415
    from fastapi.exceptions import RequestValidationError  # noqa: PLC0415
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse  # noqa: PLC0415
    from starlette.exceptions import HTTPException  # noqa: PLC0415
    from starlette.formparsers import MultiPartException  # noqa: PLC0415

    _register_identity_convertor()

    metrics = metrics or serve_metrics.Metrics()
    metrics.track_gallery(service.gallery_size)
    service.observe_batches(metrics.observe_batch)
    limits = service.limits
    app = FastAPI(title="circle-face recognition service", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(ServiceError)
    async def _service_error(_, error):
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(_, error):
        return JSONResponse({"error": f"the request is larger than the limit of "
                                      f"{limits.max_request_bytes} bytes"}, status_code=413,
                            headers={"Connection": "close"})

    @app.exception_handler(HTTPException)
    async def _http_error(_, error):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_, error):
        return JSONResponse({"error": f"bad request: {error.errors()[:1]}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal_error(_, error):
        return JSONResponse({"error": f"internal error ({type(error).__name__})"},
                            status_code=500)

    def check_token(request):
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8"), token.encode("utf-8")):
            raise ServiceError(401, "this endpoint needs 'Authorization: Bearer <token>' "
                                    "with the service's token")

    async def read_images(request, field, required=True, many=False):
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ServiceError(415 if content_type else 400,
                               f"send the image(s) as multipart/form-data part(s) named "
                               f"{field!r}" + (f" (got {content_type})" if content_type else ""))
        try:
            form = await request.form(max_files=limits.max_images + 2, max_fields=8)
        except MultiPartException as e:
            raise ServiceError(400, f"malformed multipart body: {e}") from None
        uploads = []
        for part in form.getlist(field):
            if not hasattr(part, "read"):
                raise ServiceError(400, f"{field!r} must be a file part, not a text field")
            uploads.append(await part.read())
        if required and not uploads:
            raise ServiceError(400, f"missing the image part {field!r}")
        if not many and len(uploads) > 1:
            raise ServiceError(400, f"send one {field!r} part, got {len(uploads)}")
        return uploads

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(serve_page.PAGE)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": service.embedder.saved_model_dir,
                "embedding_size": service.embedder.embedding_size,
                "gallery_faces": service.gallery_size(), "index": service.index.backend,
                "verify_threshold": service.verify_threshold, "far": service.far,
                "verify_threshold_source": service.verify_source,
                "identify_threshold": service.identify_threshold, "fpir": service.fpir,
                "identify_threshold_source": service.identify_source,
                "transform": None if service.transform is None else service.transform.describe(),
                "auth": token is not None}

    @app.get("/metrics")
    async def metrics_text():
        return PlainTextResponse(metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/embed")
    async def embed(request: Request):
        align = parse_align(request.query_params.get("align"))
        (data,) = await read_images(request, "image")
        embeddings, norms = await run_in_threadpool(service.embed, [data], align)
        return {"embedding": [float(v) for v in embeddings[0]], "norm": norms[0]}

    @app.post("/v1/verify")
    async def verify(request: Request):
        align = parse_align(request.query_params.get("align"))
        (first,) = await read_images(request, "image1")
        (second,) = await read_images(request, "image2")
        return await run_in_threadpool(service.verify, first, second, align)

    @app.post("/v1/identify")
    async def identify(request: Request):
        align = parse_align(request.query_params.get("align"))
        top_k = parse_top_k(request.query_params.get("top_k"))
        (data,) = await read_images(request, "image")
        return await run_in_threadpool(service.identify, data, top_k, align)

    @app.get("/v1/gallery")
    async def gallery():
        return await run_in_threadpool(service.identities)

    @app.post("/v1/gallery/{identity:identity}")
    async def enrol(request: Request):
        check_token(request)
        name = identity_from_path(request.scope)
        align = parse_align(request.query_params.get("align"))
        uploads = await read_images(request, "images", many=True)
        return await run_in_threadpool(service.enrol, name, uploads, align)

    @app.delete("/v1/gallery/{identity:identity}")
    async def delete(request: Request):
        check_token(request)
        name = identity_from_path(request.scope)
        return await run_in_threadpool(service.delete, name)

    return RequestGuard(app, limits.max_request_bytes, metrics)

