"""The face-recognition service: enrol people, verify and identify faces over HTTP.

    python -m export.serve --model runs/r50/export/best --gallery gallery.db
    circle-serve --model DIR --gallery gallery.db --host 0.0.0.0 --port 8080 --token SECRET

FastAPI + uvicorn (``pip install circle-face[serve]``); docs/SERVING.md has the API with curl
examples, the thresholds, sizing, and when TensorFlow Serving fits better. The model loads and
the gallery's search index is rebuilt before the port opens, so ``GET /healthz`` answers 200
as soon as anything answers. It binds to 127.0.0.1 unless ``--host`` says otherwise; with
``--token`` (or ``CIRCLE_SERVE_TOKEN`` in the environment) enrolling and deleting need
``Authorization: Bearer <token>``.
"""

import os
import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402

TOKEN_ENV = "CIRCLE_SERVE_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    fv = flag_values
    if "gallery" in fv:
        return fv
    flag_groups.define_model_path(fv)
    flags.DEFINE_string("gallery", None, "The SQLite gallery file (created when absent).",
                        flag_values=fv)
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind.", flag_values=fv)
    flags.DEFINE_integer("port", 8080, "Port to bind.",
                         lower_bound=0, upper_bound=65535, flag_values=fv)
    flags.DEFINE_string("token", None, f"Bearer token of the write endpoints (default: "
                        f"${TOKEN_ENV}; none: anyone who reaches the port may enrol).",
                        flag_values=fv)
    flags.DEFINE_float("far", 1e-3, "Verification threshold: the model report's operating "
                       "point at this false accept rate.", flag_values=fv)
    flag_groups.define_fpir(fv, "the open-set identification threshold")
    flags.DEFINE_string("identification_report", None, "report.json of python -m "
                        "export.identification holding threshold@fpir=...", flag_values=fv)
    flag_groups.define_flip(fv)
    flags.DEFINE_bool("transform", True, "Apply the model's crop/resize transform "
                      "(assets.extra/transform.json) to uploaded images.", flag_values=fv)
    flag_groups.define_align(fv, "on when the model's transform.json says its records were "
                             "aligned faces (\"align\": true), else off", note="The default of "
                             "a request's ?align=.")
    flags.DEFINE_integer("max_batch", 32, "Most images in one SavedModel call.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_float("max_wait_ms", 5.0, "Longest wait for a batch to fill, milliseconds.",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_integer("max_request_mb", 16, "Largest request body, MiB.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("max_pixels", 40_000_000, "Largest image (width x height).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("min_side", 16, "Smallest image side, pixels.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_enum("index", "auto", ["auto", "numpy", "faiss"], "Search index: exact numpy "
                      "matmul, FAISS IndexFlatIP, or auto (FAISS when installed).",
                      flag_values=fv)
    return fv


def build_service(fv):
    """The FaceService of the flags (loads the model, opens the gallery)."""
    from export import face_service  # noqa: PLC0415 - loads TensorFlow

    limits = face_service.DEFAULT_LIMITS._replace(
        max_request_bytes=fv.max_request_mb << 20, max_pixels=fv.max_pixels,
        min_side=fv.min_side)
    return face_service.FaceService.load(
        fv.model, fv.gallery, far=fv.far, fpir=fv.fpir,
        identification_report=fv.identification_report, use_transform=fv.transform,
        flip=fv.flip, limits=limits, max_batch=fv.max_batch, max_wait=fv.max_wait_ms / 1000.0,
        align_default=fv.align, index_backend=fv.index)


def main(argv, flag_values=flags.FLAGS):
    """Serve until interrupted; returns 0, or 1 with a one-line message."""
    fv = flag_values
    cli.check_usage(argv, fv, required=("model", "gallery"))
    if not 0.0 < fv.far <= 1.0 or not 0.0 < fv.fpir <= 1.0:
        print("error: --far and --fpir must be in (0, 1]", file=sys.stderr)
        return 1
    try:
        import uvicorn  # noqa: PLC0415 - the [serve] extra

        from export import serve_app, serve_metrics  # noqa: PLC0415
    except ImportError as e:
        print(f"error: the service needs pip install circle-face[serve] ({e})", file=sys.stderr)
        return 1
    from export.embedder import EmbedError  # noqa: PLC0415
    from export.gallery_store import GalleryStoreError  # noqa: PLC0415

    token = fv.token or os.environ.get(TOKEN_ENV) or None
    if fv.host not in LOOPBACK and token is None:
        print(f"warning: serving on {fv.host} without --token: anyone who reaches the port can "
              "enrol and delete people", file=sys.stderr)
    metrics = serve_metrics.Metrics()
    try:
        service = build_service(fv)
    except (EmbedError, GalleryStoreError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"model: {service.embedder.saved_model_dir}", file=sys.stderr)
    print(f"gallery: {fv.gallery} ({service.gallery_size()} face images, "
          f"{service.index.backend} index)", file=sys.stderr)
    print(f"verify threshold: {service.verify_threshold} ({service.verify_source})",
          file=sys.stderr)
    print(f"identify threshold: {service.identify_threshold} ({service.identify_source})",
          file=sys.stderr)
    app = serve_app.create_app(service, token=token, metrics=metrics)
    print(f"serving on http://{fv.host}:{fv.port}/", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=fv.host, port=fv.port, log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        service.close()
    return 0


def run():
    """Console entry point (``circle-serve``, ``python -m export.serve``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
