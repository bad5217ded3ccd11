"""Load test of the face-recognition service: concurrent identify/verify clients against a real
``python -m export.serve`` process, compared with the offline batched embedding rate of the same
model on the same machine.

    python -m benchmarks.serve_load [--clients=16] [--seconds=60] [--gallery_faces=10000]
                                    [--backbone=mobilefacenet] [--workdir=DIR]

The model is a freshly initialised backbone exported with this project's serving receiver
(``benchmarks.deploy.initialised_saved_model``; speed does not depend on the weights), with a
verification report written next to it so that the service has thresholds. The gallery is
filled with ``--gallery_faces`` random unit embeddings (10 per identity) straight into the
SQLite store: search cost depends on the gallery's size, not on where its rows came from.

Each client loops for ``--seconds``: an identify (one 112x112 JPEG) then a verify (two), over
one keep-alive connection. Reported (one JSON line): requests, errors (any non-200 answer or
transport failure), p50/p99 latency per endpoint, requests/s, images/s, SavedModel calls and
their mean batch (from the service's /metrics), and the offline rate:
``Embedder.embed_bytes`` on the same JPEGs in batches of ``--max_batch`` with the service's
flip setting, measured before and after the load (the figure used is their mean). The clients
run on the same CPUs as the server: their HTTP and multipart work is load the service pays for.
On a machine shared with other jobs wall-clock rates depend on each process's share of the
CPUs, so the rates per CPU second (the server process's user + system time, all its threads,
against the offline loop's) are reported too: they say what the service costs per image.
"""

import argparse
import json
import os
import statistics
import threading
import time

import numpy as np

from benchmarks import common

PER_IDENTITY = 10


def build_model(workdir, backbone):
    from benchmarks import deploy  # noqa: PLC0415

    path = deploy.initialised_saved_model(workdir, backbone, 112)
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    # A placeholder operating point: this model is untrained, only its speed matters here.
    with open(os.path.join(extra, "report.json"), "w") as f:
        json.dump({"far_target": 1e-3, "fold_val_threshold": [1.2], "threshold": 1.2,
                   "extra": {"flip": True}}, f)
    return path


def fill_gallery(path, model_dir, faces, dim, flip=True):
    from export import gallery_store  # noqa: PLC0415

    rng = np.random.default_rng(0)
    with gallery_store.GalleryStore(path, gallery_store.model_fingerprint(model_dir), dim,
                                    model_path=model_dir, flip=flip) as store:
        have = len(store)
        for start in range(have, faces, PER_IDENTITY):
            rows = rng.standard_normal((PER_IDENTITY, dim)).astype(np.float32)
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
            store.enrol(f"person{start // PER_IDENTITY:06d}",
                        [(f"{start + i:064x}", None, r) for i, r in enumerate(rows)])
        return len(store)


def jpegs(count, seed=0):
    rng = np.random.RandomState(seed)
    return [common.jpeg_bytes(common.face_like_pixels(rng, 112)) for _ in range(count)]


def offline_rate(model_dir, images, batch, flip=True, seconds=10.0):
    """``(images/s, images per CPU second)`` of ``Embedder.embed_bytes`` in batches of
    ``batch`` for about ``seconds``."""
    from export import embedder as embedder_lib  # noqa: PLC0415

    with embedder_lib.load_saved_model(model_dir) as embedder:
        embedder.embed_bytes(images[:batch], batch_size=batch, flip=flip)  # warm-up
        done, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            embedder.embed_bytes(images[:batch], batch_size=batch, flip=flip)
            done += batch
        return (done / (time.perf_counter() - started),
                done / max(time.process_time() - cpu, 1e-9))


def process_cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_loop(url, images, deadline, results, index):
    import httpx  # noqa: PLC0415

    latencies = {"identify": [], "verify": []}
    errors, count = 0, 0
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < deadline:
            first = images[(index + count) % len(images)]
            second = images[(index + count + 1) % len(images)]
            for endpoint, files in (
                    ("identify", [("image", ("a.jpg", first, "image/jpeg"))]),
                    ("verify", [("image1", ("a.jpg", first, "image/jpeg")),
                                ("image2", ("b.jpg", second, "image/jpeg"))])):
                started = time.perf_counter()
                try:
                    response = client.post(f"/v1/{endpoint}", files=files)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies[endpoint].append(time.perf_counter() - started)
                errors += not ok
            count += 1
    results[index] = (latencies, errors)


def scraped_batches(url):
    """``(images, SavedModel calls)`` from the service's /metrics."""
    import httpx  # noqa: PLC0415

    values = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("circle_batch_size_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return (int(values.get("circle_batch_size_sum", 0)),
            int(values.get("circle_batch_size_count", 0)))


def percentile(values, q):
    return float(np.percentile(values, q)) * 1000 if values else None


def run(clients=16, seconds=60.0, gallery_faces=10_000, backbone="mobilefacenet", workdir=None,
        max_batch=32, offline_seconds=10.0):
    with common.scratch_dir(workdir, "serve_load") as directory:
        return _run(clients, seconds, gallery_faces, backbone, directory, max_batch,
                    offline_seconds)


def _run(clients, seconds, gallery_faces, backbone, workdir, max_batch, offline_seconds):
    from tests.serve_process import Server  # noqa: PLC0415 - the tests' process wrapper

    model_dir = build_model(workdir, backbone)
    gallery = os.path.join(workdir, f"gallery_{gallery_faces}.db")
    faces = fill_gallery(gallery, model_dir, gallery_faces, 512)
    images = jpegs(64)
    before, before_cpu = offline_rate(model_dir, images, max_batch, seconds=offline_seconds)
    results = [None] * clients
    with Server(model_dir, gallery, f"--max_batch={max_batch}", "--max_wait_ms=5") as server:
        deadline = time.monotonic() + seconds
        started, server_cpu = time.perf_counter(), process_cpu_seconds(server.process.pid)
        threads = [threading.Thread(target=client_loop,
                                    args=(server.url, images, deadline, results, i))
                   for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        server_cpu = process_cpu_seconds(server.process.pid) - server_cpu
        batches = scraped_batches(server.url)
    after, after_cpu = offline_rate(model_dir, images, max_batch, seconds=offline_seconds)
    identify = [t for lat, _ in results for t in lat["identify"]]
    verify = [t for lat, _ in results for t in lat["verify"]]
    errors = sum(e for _, e in results)
    images_per_s = (len(identify) + 2 * len(verify)) / elapsed
    offline = statistics.mean([before, after])
    return common.emit("serve_load", {
        "backbone": backbone, "clients": clients, "seconds": common.rounded(elapsed, 1),
        "gallery_faces": faces, "requests": len(identify) + len(verify), "errors": errors,
        "identify_p50_ms": common.rounded(percentile(identify, 50)),
        "identify_p99_ms": common.rounded(percentile(identify, 99)),
        "verify_p50_ms": common.rounded(percentile(verify, 50)),
        "verify_p99_ms": common.rounded(percentile(verify, 99)),
        "requests_per_s": common.rounded((len(identify) + len(verify)) / elapsed, 2),
        "images_per_s": common.rounded(images_per_s, 2),
        "offline_images_per_s_before": common.rounded(before, 2),
        "offline_images_per_s_after": common.rounded(after, 2),
        "ratio_to_offline": common.ratio(images_per_s, offline),
        "images_per_server_cpu_s": common.rounded(images_per_s * elapsed / server_cpu, 2),
        "offline_images_per_cpu_s": common.rounded(statistics.mean([before_cpu, after_cpu]), 2),
        "ratio_per_cpu_s": common.ratio(images_per_s * elapsed / server_cpu,
                                        statistics.mean([before_cpu, after_cpu])),
        "model_calls": batches[1], "mean_batch": common.ratio(batches[0], batches[1]),
        "machine": common.machine()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--gallery_faces", type=int, default=10_000)
    parser.add_argument("--backbone", default="mobilefacenet")
    parser.add_argument("--max_batch", type=int, default=32)
    parser.add_argument("--offline_seconds", type=float, default=10.0)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    run(args.clients, args.seconds, args.gallery_faces, args.backbone, args.workdir,
        args.max_batch, args.offline_seconds)


if __name__ == "__main__":
    main()
