"""The face-recognition service (export/serve_app.py on export/face_service.py) through
FastAPI's TestClient: every endpoint against the tiny model's numpy reference, the thresholds
of the model's report, auth, every bad input of issue 30 answered 4xx while the service keeps
serving, the gallery across a restart, metrics in Prometheus text."""

import re
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from export import face_service, gallery_store, serve_app, serve_thresholds  # noqa: E402
from tests import serve_helpers as sh  # noqa: E402

TOKEN = "s3cret-token"
LIMITS = face_service.DEFAULT_LIMITS._replace(max_request_bytes=1 << 20, min_side=sh.SIZE)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return sh.build_model(tmp_path_factory.mktemp("serve_model") / "model")


def open_service(model_dir, db, **kwargs):
    options = {"limits": LIMITS, "max_wait": 0.002}
    options.update(kwargs)
    return face_service.FaceService.load(model_dir, str(db), **options)


@pytest.fixture
def service(model, tmp_path):
    service = open_service(model[0], tmp_path / "gallery.db")
    yield service
    service.close()


@pytest.fixture
def client(service):
    with TestClient(serve_app.create_app(service, token=TOKEN)) as client:
        yield client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def files(field, *blobs):
    return [(field, (f"{field}{i}.png", blob, "image/png")) for i, blob in enumerate(blobs)]


def enrol(client, name, identity, count=3):
    blobs = [sh.png_bytes(sh.face_pixels(identity, i)) for i in range(count)]
    return client.post(f"/v1/gallery/{name}", files=files("images", *blobs), headers=AUTH)


def test_healthz_page_and_thresholds_from_the_report(client, model):
    health = client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["gallery_faces"] == 0 and body["auth"] is True
    assert body["verify_threshold"] == pytest.approx(sh.REPORT_COSINE)
    assert body["far"] == 1e-3
    assert body["verify_threshold_source"].startswith("VAL@FAR=0.001 operating point")
    assert "no identification report" in body["identify_threshold_source"]
    assert body["identify_threshold"] == pytest.approx(sh.REPORT_COSINE)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="search-form"' in page.text and "/v1/identify" in page.text


def test_embed_matches_the_numpy_reference(client, model):
    _, reference = model
    for pixels in (sh.face_pixels(3, 0), sh.face_pixels(3, 0)[:, :, 0]):
        response = client.post("/v1/embed", files=files("image", sh.png_bytes(pixels)))
        assert response.status_code == 200, response.text
        body = response.json()
        np.testing.assert_allclose(body["embedding"], reference(pixels), atol=1e-5)
        # embedding_norm with flip TTA: the norm of the mean of the image's and its mirror's
        # projections before normalisation
        rgb = np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels
        mean = (reference.unnormalised(rgb) + reference.unnormalised(rgb[:, ::-1])) / 2
        assert body["norm"] == pytest.approx(float(np.linalg.norm(mean)), rel=1e-4)


def test_verify_scores_and_decides_at_the_report_threshold(client, model):
    _, reference = model
    a, b, c = sh.face_pixels(1, 0), sh.face_pixels(1, 1), sh.face_pixels(2, 0)
    same = client.post("/v1/verify", files=files("image1", sh.png_bytes(a))
                       + files("image2", sh.png_bytes(b))).json()
    other = client.post("/v1/verify", files=files("image1", sh.png_bytes(a))
                        + files("image2", sh.png_bytes(c))).json()
    for result, (x, y) in ((same, (a, b)), (other, (a, c))):
        expected = float(np.dot(reference(x), reference(y)))
        assert result["score"] == pytest.approx(expected, abs=1e-5)
        assert result["threshold"] == pytest.approx(sh.REPORT_COSINE)
        assert result["same"] is bool(expected > sh.REPORT_COSINE)
        assert result["far"] == 1e-3
    assert same["same"] is True and other["same"] is False


def test_threshold_at_another_far_comes_from_the_roc():
    data = {"far_target": 1e-3, "fold_val_threshold": [1.0],
            "roc_thresholds": [0.5, 1.0, 1.5, 2.0], "fpr": [0.0, 0.0005, 0.01, 0.2]}
    assert serve_thresholds.threshold_at_far(data, 1e-3)[0] == pytest.approx(0.5)
    # FAR 1e-2: the largest distance with FPR <= 0.01 is 1.5 -> cosine 0.25
    assert serve_thresholds.threshold_at_far(data, 1e-2)[0] == pytest.approx(0.25)
    assert serve_thresholds.threshold_at_far(data, 1e-5)[0] == pytest.approx(1 - 0.5 / 2)
    assert serve_thresholds.threshold_at_far({}, 1e-3)[0] is None


def test_enrol_list_identify_delete(client, model):
    assert enrol(client, "alice", 1).json() == {"identity": "alice", "enrolled": 3, "images": 3}
    assert enrol(client, "bob", 2, count=2).json()["enrolled"] == 2
    assert enrol(client, "alice", 1).json()["enrolled"] == 0  # same images: skipped
    listed = client.get("/v1/gallery").json()
    assert listed == {"identities": [{"identity": "alice", "images": 3},
                                     {"identity": "bob", "images": 2}]}
    probe = sh.png_bytes(sh.face_pixels(2, 7))
    result = client.post("/v1/identify?top_k=5", files=files("image", probe)).json()
    assert result["decision"] == "bob"
    assert [m["identity"] for m in result["matches"]] == ["bob", "alice"]
    _, reference = model
    want = max(float(np.dot(reference(sh.face_pixels(2, 7)), reference(sh.face_pixels(2, i))))
               for i in range(2))
    assert result["matches"][0]["score"] == pytest.approx(want, abs=1e-5)
    one = client.post("/v1/identify?top_k=1", files=files("image", probe)).json()
    assert len(one["matches"]) == 1
    stranger = client.post("/v1/identify", files=files("image", sh.png_bytes(
        sh.face_pixels(99, 0)))).json()
    assert stranger["decision"] == "unknown"
    assert stranger["matches"][0]["score"] <= sh.REPORT_COSINE
    assert client.delete("/v1/gallery/bob", headers=AUTH).json() == {"identity": "bob",
                                                                     "deleted": 2}
    assert client.delete("/v1/gallery/bob", headers=AUTH).status_code == 404
    after = client.post("/v1/identify", files=files("image", probe)).json()
    assert [m["identity"] for m in after["matches"]] == ["alice"]
    assert client.get("/healthz").json()["gallery_faces"] == 3


def test_unicode_identity_round_trips(client):
    assert enrol(client, "Jos%C3%A9%20%C3%91", 4).json()["identity"] == "José Ñ"
    assert client.get("/v1/gallery").json()["identities"][0]["identity"] == "José Ñ"
    assert client.delete("/v1/gallery/Jos%C3%A9%20%C3%91", headers=AUTH).status_code == 200


def test_write_endpoints_need_the_token(client):
    blob = sh.png_bytes(sh.face_pixels(1, 0))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.post("/v1/gallery/eve", files=files("images", blob), headers=headers)
        assert response.status_code == 401 and "Bearer" in response.json()["error"]
        assert client.delete("/v1/gallery/eve", headers=headers).status_code == 401
    assert client.get("/v1/gallery").json() == {"identities": []}
    # reading endpoints are open
    assert client.post("/v1/embed", files=files("image", blob)).status_code == 200


def test_no_token_no_auth(service):
    with TestClient(serve_app.create_app(service)) as open_client:
        assert enrol(open_client, "x", 1).status_code == 200


@pytest.fixture(scope="module")
def bomb():
    return sh.decompression_bomb(14000)


def bad_requests(bomb):
    """``(what, method, url, kwargs, status)`` for every bad input of the issue, and more."""
    face = sh.face_pixels(1, 0, size=32)
    jpeg = sh.jpeg_bytes(face)
    one = sh.png_bytes(face)
    return [
        ("not an image", "post", "/v1/embed", {"files": files("image", b"hello world" * 9)},
         400, "not an image"),
        ("truncated JPEG", "post", "/v1/embed", {"files": files("image", jpeg[:len(jpeg) // 2])},
         400, "truncated"),
        ("empty image part", "post", "/v1/embed", {"files": files("image", b"")}, 400, "empty"),
        ("empty body", "post", "/v1/embed", {"content": b""}, 400, "multipart"),
        ("empty multipart", "post", "/v1/embed",
         {"content": b"", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
         400, "missing"),
        ("1x1 image", "post", "/v1/embed", {"files": files("image", sh.png_bytes(
            np.zeros((1, 1, 3), np.uint8)))}, 422, "too small"),
        ("decompression bomb", "post", "/v1/embed", {"files": files("image", bomb)}, 413,
         "decompression-bomb"),
        ("12000x12000 image", "post", "/v1/embed", {"files": files(
            "image", sh.png_header_only(12000, 12000))}, 413, "12000x12000"),
        ("over the size limit", "post", "/v1/embed", {"files": files(
            "image", b"\0" * (LIMITS.max_request_bytes + 10))}, 413, "larger than the limit"),
        ("over the limit, chunked", "post", "/v1/embed", {
            "content": iter([b"x" * 65536] * 20),
            "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 413, "limit"),
        ("non-UTF-8 identity", "post", "/v1/gallery/%FF%FEbad", {"files": files("images", one),
                                                                 "headers": AUTH}, 400, "UTF-8"),
        ("slash in identity", "post", "/v1/gallery/a%2Fb", {"files": files("images", one),
                                                            "headers": AUTH}, 400, "path"),
        ("dot-dot identity", "post", "/v1/gallery/%2E%2E", {"files": files("images", one),
                                                            "headers": AUTH}, 400, "path"),
        ("traversal identity", "delete", "/v1/gallery/..%2F..%2Fetc%2Fpasswd",
         {"headers": AUTH}, 400, "path"),
        ("control character", "post", "/v1/gallery/a%0Ab", {"files": files("images", one),
                                                            "headers": AUTH}, 400, "control"),
        ("no images to enrol", "post", "/v1/gallery/zed", {"files": files("other", one),
                                                           "headers": AUTH}, 400, "images"),
        ("text instead of a file", "post", "/v1/embed", {"data": {"image": "abc"},
                                                         "files": files("other", one)}, 400,
         "file part"),
        ("form, not multipart", "post", "/v1/embed", {"data": {"image": "abc"}}, 415,
         "multipart"),
        ("one image for verify", "post", "/v1/verify", {"files": files("image1", one)}, 400,
         "image2"),
        ("bad top_k", "post", "/v1/identify?top_k=0", {"files": files("image", one)}, 400,
         "top_k"),
        ("bad align", "post", "/v1/embed?align=maybe", {"files": files("image", one)}, 400,
         "align"),
        ("json body", "post", "/v1/embed", {"json": {"image": "x"}}, 415, "multipart"),
        ("unknown path", "get", "/v2/nothing", {}, 404, "Not Found"),
        ("wrong method", "get", "/v1/embed", {}, 405, "Method Not Allowed"),
    ]


def test_bad_inputs_are_4xx_and_the_service_keeps_serving(client, bomb):
    assert enrol(client, "alice", 1).status_code == 200
    probe = files("image", sh.png_bytes(sh.face_pixels(1, 5)))
    for what, method, url, kwargs, status, text in bad_requests(bomb):
        response = getattr(client, method)(url, **kwargs)
        assert response.status_code == status, (what, response.status_code, response.text)
        assert text in response.json()["error"], (what, response.json())
        assert client.post("/v1/identify", files=probe).json()["decision"] == "alice", what
    assert client.get("/v1/gallery").json()["identities"] == [{"identity": "alice",
                                                               "images": 3}]


def test_gallery_survives_a_restart_and_refuses_another_model(model, tmp_path):
    db = tmp_path / "g.db"
    first = open_service(model[0], db)
    first.enrol("carol", [sh.png_bytes(sh.face_pixels(5, i)) for i in range(2)])
    probe = sh.png_bytes(sh.face_pixels(5, 9))
    before = first.identify(probe)
    first.close()
    second = open_service(model[0], db)
    try:
        assert second.identities() == {"identities": [{"identity": "carol", "images": 2}]}
        assert second.identify(probe) == before
    finally:
        second.close()
    other, _ = sh.build_model(tmp_path / "other", seed=11)
    with pytest.raises(gallery_store.ModelMismatchError, match="another model"):
        open_service(other, db)


def test_the_model_transform_is_applied(tmp_path):
    path, reference = sh.build_model(tmp_path / "cropped", transform={
        "crop_box": [4, 6, 12, 14], "image_size": None, "resampling": None})
    service = open_service(path, tmp_path / "g.db")
    try:
        raw = sh.face_pixels(8, 0, size=20)
        embeddings, _ = service.embed([sh.png_bytes(raw)])
        np.testing.assert_allclose(embeddings[0], reference(raw[6:14, 4:12]), atol=1e-5)
        with pytest.raises(face_service.ServiceError, match="crop box") as error:
            service.embed([sh.png_bytes(sh.face_pixels(8, 0, size=10))])
        assert error.value.status == 422
    finally:
        service.close()


class FakeDetector:
    """Landmarks of an upright face in the middle of the photo, or no face."""

    def __init__(self, faces=True):
        self.faces = faces

    def detect(self, image):
        if not self.faces:
            return []
        w, h = image.size

        class Face:
            box = (0, 0, w, h)
            score = 0.99
            landmarks = np.array([[0.35 * w, 0.4 * h], [0.65 * w, 0.4 * h], [0.5 * w, 0.55 * h],
                                  [0.38 * w, 0.7 * h], [0.62 * w, 0.7 * h]])

        return [Face()]


def test_align_detects_and_aligns(model, tmp_path):
    found = open_service(model[0], tmp_path / "a.db", detector_factory=FakeDetector)
    none = open_service(model[0], tmp_path / "b.db",
                        detector_factory=lambda: FakeDetector(faces=False))
    try:
        with TestClient(serve_app.create_app(found)) as client:
            photo = files("image", sh.png_bytes(sh.face_pixels(1, 0, size=64)))
            aligned = client.post("/v1/embed?align=true", files=photo)
            plain = client.post("/v1/embed?align=false", files=photo)
            assert aligned.status_code == plain.status_code == 200
            assert not np.allclose(aligned.json()["embedding"], plain.json()["embedding"])
        with TestClient(serve_app.create_app(none)) as client:
            response = client.post("/v1/embed?align=1", files=photo)
            assert response.status_code == 422 and "no face" in response.json()["error"]
    finally:
        found.close()
        none.close()
    # a model whose records were aligned faces: align is the default
    path, _ = sh.build_model(tmp_path / "aligned_model", transform={
        "crop_box": None, "image_size": 112, "resampling": "lanczos", "align": True})
    aligned_model = open_service(path, tmp_path / "c.db",
                                 detector_factory=lambda: FakeDetector(faces=False))
    try:
        assert aligned_model.align_default is True
        with pytest.raises(face_service.ServiceError, match="no face"):
            aligned_model.embed([sh.png_bytes(sh.face_pixels(1, 0, size=64))])
        assert aligned_model.embed([sh.png_bytes(sh.face_pixels(1, 0, size=64))],
                                   align=False)[0].shape == (1, sh.tiny_model.DIM)
    finally:
        aligned_model.close()
    assert found.align_default is False


def test_concurrent_requests_share_model_calls(model, tmp_path):
    sizes = []
    service = open_service(model[0], tmp_path / "g.db", max_wait=0.05, max_batch=16,
                           on_batch=lambda size, seconds: sizes.append(size))
    try:
        blobs = [sh.png_bytes(sh.face_pixels(i, 0)) for i in range(16)]
        results = {}
        barrier = threading.Barrier(16)

        def embed(i):
            barrier.wait()
            results[i] = service.embed([blobs[i]])[0][0]

        threads = [threading.Thread(target=embed, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _, reference = model
        for i in range(16):
            np.testing.assert_allclose(results[i], reference(sh.face_pixels(i, 0)), atol=1e-5)
        assert sum(sizes) == 16 and max(sizes) > 1
    finally:
        service.close()


def parse_metrics(text):
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_in_prometheus_text(client):
    enrol(client, "alice", 1)
    blob = files("image", sh.png_bytes(sh.face_pixels(1, 0)))
    for _ in range(3):
        client.post("/v1/embed", files=blob)
    client.post("/v1/embed", files=files("image", b"junk"))
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert re.search(r"^# TYPE circle_request_seconds histogram$", text, re.M)
    values = parse_metrics(text)
    assert values['circle_requests_total{endpoint="/v1/embed",status="200"}'] == 3
    assert values['circle_requests_total{endpoint="/v1/embed",status="400"}'] == 1
    assert values['circle_errors_total{endpoint="/v1/embed",status="400"}'] == 1
    assert values['circle_requests_total{endpoint="/v1/gallery/{identity}",status="200"}'] == 1
    assert values["circle_gallery_faces"] == 3
    buckets = [v for k, v in values.items()
               if k.startswith('circle_request_seconds_bucket{endpoint="/v1/embed"')]
    assert buckets == sorted(buckets) and buckets[-1] == 4
    assert values['circle_request_seconds_count{endpoint="/v1/embed"}'] == 4
    # 3 embeds + 3 enrolled images went through the model
    assert values["circle_batch_size_sum"] == 6
    assert 1 <= values["circle_batch_size_count"] <= 6


def test_embedding_norm_output_is_returned(tmp_path):
    path, reference = sh.build_model(tmp_path / "normed", report=False)
    unnormed, _ = sh.build_model(tmp_path / "older", norm_output=False)
    pixels = sh.face_pixels(2, 0)
    for model_dir, flip, want in (
            (path, False, float(np.linalg.norm(reference.unnormalised(pixels)))),
            (unnormed, True, None)):
        service = open_service(model_dir, tmp_path / f"{flip}.db", flip=flip)
        try:
            with TestClient(serve_app.create_app(service)) as client:
                body = client.post("/v1/embed", files=files("image", sh.png_bytes(pixels))).json()
            np.testing.assert_allclose(body["embedding"], reference(pixels, flip=flip),
                                       atol=1e-5)
            if want is None:
                assert body["norm"] is None  # an export without embedding_norm
            else:
                assert body["norm"] == pytest.approx(want, rel=1e-4)
        finally:
            service.close()


def run_serve(args):
    from absl import app  # noqa: PLC0415

    import cli  # noqa: PLC0415
    from export import serve  # noqa: PLC0415

    try:
        return cli.run_main(serve.define_flags, serve.main, ["serve"] + list(args))
    except app.UsageError as e:
        return f"usage: {e}"


def test_serve_cli_errors_are_one_line(model, tmp_path, capsys):
    assert run_serve([]) == "usage: --model is required"
    assert run_serve([f"--model={model[0]}"]) == "usage: --gallery is required"
    db = str(tmp_path / "g.db")
    assert run_serve([f"--model={model[0]}", f"--gallery={db}", "--far=0"]) == 1
    assert "--far and --fpir" in capsys.readouterr().err
    assert run_serve([f"--model={tmp_path / 'nothing'}", f"--gallery={db}"]) == 1
    assert capsys.readouterr().err.strip().startswith("error: model directory")
    assert run_serve([f"--model={model[0]}", f"--gallery={tmp_path / 'n.db'}",
                      "--noflip"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "measured with flip" in err[0]
    other, _ = sh.build_model(tmp_path / "other", seed=12)
    open_service(other, db).close()  # a gallery of another model
    assert run_serve([f"--model={model[0]}", f"--gallery={db}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "enrolled with another model" in err[0]


def test_identification_threshold_from_an_identification_report(tmp_path):
    import json  # noqa: PLC0415

    path, _ = sh.build_model(tmp_path / "m")
    report_dir = tmp_path / "m" / "assets.extra" / "identification"
    report_dir.mkdir()
    (report_dir / "report.json").write_text(json.dumps({"threshold@fpir=0.01": 0.61,
                                                        "threshold@fpir=0.1": 0.42}))
    threshold, source = serve_thresholds.identification_threshold(path, 0.01)
    assert threshold == 0.61 and source.startswith("threshold@fpir=0.01 from")
    assert serve_thresholds.identification_threshold(path, 0.1)[0] == 0.42
    # an FPIR the report lacks: the verification threshold stands in
    assert serve_thresholds.identification_threshold(path, 0.05)[0] == pytest.approx(
        sh.REPORT_COSINE)
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"threshold@fpir=0.01": 0.7}))
    assert serve_thresholds.identification_threshold(path, 0.01, str(given))[0] == 0.7
    with pytest.raises(ValueError, match="no finite threshold@fpir=0.2"):
        serve_thresholds.identification_threshold(path, 0.2, str(given))
    # reports measured with flip TTA (the helper's report says so) judge flip embeddings only
    with pytest.raises(ValueError, match="measured with flip.*--flip"):
        serve_thresholds.verification_threshold(path, 1e-3, flip=False)
    noflip = tmp_path / "noflip.json"
    noflip.write_text(json.dumps({"threshold@fpir=0.01": 0.7, "extra": {"flip": False}}))
    with pytest.raises(ValueError, match="without flip.*--noflip"):
        serve_thresholds.identification_threshold(path, 0.01, str(noflip), flip=True)
    service = open_service(path, tmp_path / "g.db")
    try:
        assert service.identify_threshold == 0.61
    finally:
        service.close()
