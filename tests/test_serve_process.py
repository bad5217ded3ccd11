"""The service as a real process (``python -m export.serve`` under uvicorn on 127.0.0.1):
``kill -9`` in the middle of enrolling: after the restart every identity is complete or absent
and nothing enrolled before is lost; the load benchmark's smoke run. (A gallery of another
model is refused: test_serve.py's ``test_serve_cli_errors_are_one_line``, in-process.)"""

import os
import signal
import sqlite3
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from tests import serve_helpers as sh  # noqa: E402
from tests.serve_process import Server  # noqa: E402

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGES_PER_IDENTITY = 6


def enrol(url, name, identity, count=IMAGES_PER_IDENTITY, timeout=30):
    files = [("images", (f"{i}.png", sh.png_bytes(sh.face_pixels(identity, i, size=16)),
                         "image/png")) for i in range(count)]
    return httpx.post(f"{url}/v1/gallery/{name}", files=files, headers=AUTH, timeout=timeout)


def gallery(url):
    return {p["identity"]: p["images"]
            for p in httpx.get(f"{url}/v1/gallery", timeout=10).json()["identities"]}


@pytest.mark.slow
def test_kill_9_mid_enrolment_leaves_identities_whole(tmp_path):
    model_dir, _ = sh.build_model(tmp_path / "model")
    db = str(tmp_path / "gallery.db")
    confirmed, interrupted, lock = [], [], threading.Lock()
    stop = threading.Event()
    with Server(model_dir, db, f"--token={TOKEN}") as server:
        assert httpx.post(f"{server.url}/v1/gallery/x",
                          files=[("images", ("a.png", b"x", "image/png"))],
                          timeout=10).status_code == 401
        for i in range(3):
            assert enrol(server.url, f"before_{i}", i).status_code == 200

        def enrol_loop(worker):
            n = 0
            while not stop.is_set():
                name = f"w{worker}_{n}"
                try:
                    response = enrol(server.url, name, 100 + worker * 1000 + n)
                except httpx.HTTPError:
                    with lock:
                        interrupted.append(name)  # the server died under this enrolment
                    return
                if response.status_code == 200:
                    with lock:
                        confirmed.append(name)
                n += 1

        workers = [threading.Thread(target=enrol_loop, args=(w,)) for w in range(4)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while len(confirmed) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(server.process.pid, signal.SIGKILL)  # while the four enrol loops are busy
        server.process.wait(30)
        stop.set()
        for worker in workers:
            worker.join(60)
    assert len(confirmed) >= 8, server.log()
    assert interrupted, "the kill interrupted no enrolment: the test proved nothing"
    with sqlite3.connect(db) as database:  # the file a crash left: consistent
        assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Server(model_dir, db, f"--token={TOKEN}") as restarted:
        people = gallery(restarted.url)
        for i in range(3):
            assert people[f"before_{i}"] == IMAGES_PER_IDENTITY
        for name in confirmed:
            assert people[name] == IMAGES_PER_IDENTITY, name
        assert set(people.values()) == {IMAGES_PER_IDENTITY}, people  # none half-enrolled
        probe = [("image", ("p.png", sh.png_bytes(sh.face_pixels(1, 40, size=16)),
                            "image/png"))]
        result = httpx.post(f"{restarted.url}/v1/identify", files=probe, timeout=30).json()
        assert result["decision"] == "before_1"
        health = httpx.get(f"{restarted.url}/healthz", timeout=10).json()
        assert health["gallery_faces"] == IMAGES_PER_IDENTITY * len(people)
        # and it still takes new people
        assert enrol(restarted.url, "after", 7).status_code == 200


@pytest.mark.slow
def test_load_benchmark_runs_without_errors(tmp_path, capsys):
    from benchmarks import serve_load  # noqa: PLC0415

    figures = serve_load.run(clients=4, seconds=3, gallery_faces=100, backbone="tiny",
                             workdir=str(tmp_path), offline_seconds=1)
    assert figures["errors"] == 0 and figures["gallery_faces"] == 100
    assert figures["requests"] > 0 and figures["identify_p99_ms"] >= figures["identify_p50_ms"]
    assert '"benchmark": "serve_load"' in capsys.readouterr().out
