"""evaluation/ijb.py: meta readers, insightface's template pooling, TAR@FAR both ways, the CLI.

The references are loops written from insightface's ``eval_ijbc.py`` (``image2template_feature``,
``verification``) and from the definitions of scikit-learn's ``roc_curve`` and of TAR@FAR; the
CLI runs on synthetic meta files over generated faces placed in loose crops by random
similarity transforms.
"""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import cli
from data_tools.alignment import face_alignment as align
from data_tools.synthetic import faces as synthetic_faces
from evaluation import ijb as ijb_protocol
from export import ijb
from tests import tiny_model

# ---------------------------------------------------------------------------------------------
# References.


def insightface_template_features(img_feats, templates, medias):
    """insightface eval_ijbc.py image2template_feature, loop for loop."""
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count_template, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_norm_feats = img_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_norm_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_norm_feats += [face_norm_feats[ind_m]]
            else:
                media_norm_feats += [np.mean(face_norm_feats[ind_m], axis=0, keepdims=True)]
        media_norm_feats = np.array(media_norm_feats)
        template_feats[count_template] = np.sum(media_norm_feats, axis=0)
    norms = np.sqrt(np.sum(template_feats ** 2, axis=1, keepdims=True))
    return unique_templates, template_feats / np.where(norms == 0, 1, norms)


def insightface_image_features(img_feats, faceness_scores, use_flip_test=True,
                               use_norm_score=True, use_detector_score=True):
    """insightface ``_evaluation_/ijb/ijb_11.py`` (commit 7fadd420c2351d0ffa8cac403421c1a3ed733365,
    lines 280-301, the same block as ``arcface_torch/eval_ijbc.py``): ``img_feats`` [N, 2D] is
    each face's raw feature then its mirror's (``forward_db``), ``use_norm_score`` is N1."""
    if use_flip_test:
        # add --- F2
        img_input_feats = img_feats[:, 0:img_feats.shape[1] //
                                    2] + img_feats[:, img_feats.shape[1] // 2:]
    else:
        img_input_feats = img_feats[:, 0:img_feats.shape[1] // 2]

    if use_norm_score:
        img_input_feats = img_input_feats  # noqa: PLW0127 (transcribed as written)
    else:
        # normalise features to remove norm information
        img_input_feats = img_input_feats / np.sqrt(
            np.sum(img_input_feats**2, -1, keepdims=True))

    if use_detector_score:
        img_input_feats = img_input_feats * faceness_scores[:, np.newaxis]
    else:
        img_input_feats = img_input_feats  # noqa: PLW0127
    return img_input_feats


def brute_roc(labels, scores, drop_intermediate=True):
    thresholds = sorted(set(scores), reverse=True)
    pos = sum(labels)
    neg = len(labels) - pos
    points = [(0, 0, math.inf)]
    for t in thresholds:
        tp = sum(1 for s, y in zip(scores, labels) if y and s >= t)
        fp = sum(1 for s, y in zip(scores, labels) if not y and s >= t)
        points.append((fp, tp, t))
    if drop_intermediate:
        body = points[1:]
        kept = [body[0]]
        for i in range(1, len(body) - 1):
            a, b, c = body[i - 1], body[i], body[i + 1]
            collinear = (c[0] - 2 * b[0] + a[0] == 0) and (c[1] - 2 * b[1] + a[1] == 0)
            if not collinear:
                kept.append(b)
        if len(body) > 1:
            kept.append(body[-1])
        points = [points[0]] + kept
    return ([p[0] / float(neg) for p in points], [p[1] / float(pos) for p in points],
            [p[2] for p in points])


def brute_tar_at_far(labels, scores, fars):
    pos = sum(labels)
    neg = len(labels) - pos
    out = {}
    fpr, tpr, _ = brute_roc(labels, scores)
    for far in fars:
        best = 0.0
        for t in [math.inf] + sorted(set(scores)):
            fa = sum(1 for s, y in zip(scores, labels) if not y and s >= t) / float(neg)
            if fa <= far:
                best = max(best, sum(1 for s, y in zip(scores, labels) if y and s >= t)
                           / float(pos))
        out[f"tar@far={far:g}"] = best
    out.update(insightface_nearest(labels, scores, fars))
    return out


def insightface_nearest(labels, scores, x_labels):
    """insightface ``arcface_torch/eval_ijbc.py`` (commit
    7fadd420c2351d0ffa8cac403421c1a3ed733365, lines 455-470; ``_evaluation_/ijb/ijb_11.py``
    lines 350-366 are the same), with :func:`brute_roc` for scikit-learn's ``roc_curve``."""
    out = {}
    fpr, tpr, _ = brute_roc(labels, scores)
    fpr = np.flipud(fpr)
    tpr = np.flipud(tpr)  # select largest tpr at same fpr
    for fpr_iter in np.arange(len(x_labels)):
        _, min_index = min(
            list(zip(abs(fpr - x_labels[fpr_iter]), range(len(fpr)))))
        out[f"tar_nearest@far={x_labels[fpr_iter]:g}"] = tpr[min_index]
        out[f"far_nearest@far={x_labels[fpr_iter]:g}"] = fpr[min_index]
    return out


# ---------------------------------------------------------------------------------------------
# Library functions.


@pytest.mark.parametrize("seed", range(6))
def test_template_pooling_equals_insightface(seed):
    rng = np.random.RandomState(seed)
    n = rng.randint(1, 80)
    feats = rng.randn(n, 7)
    templates = rng.randint(0, 12, n) * 3 + 5
    medias = rng.randint(0, 6, n) + 100
    expected_ids, expected = insightface_template_features(feats, templates, medias)
    ids, got = ijb_protocol.template_features(feats, templates, medias)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_n1_pooling_equals_insightface(seed, flip):
    """N1 pools the embeddings before normalisation (the embedder's ``unnormalised``: the mean
    of a face's and its mirror's with flip) as insightface's use_norm_score=True does; N0 of
    one-image embeddings is its use_norm_score=False. Raw features with norms 1..20: the two
    modes differ."""
    rng = np.random.RandomState(seed)
    n, dim = 60, 6
    plain = rng.randn(n, dim) * rng.uniform(1, 20, (n, 1))
    mirror = plain + rng.randn(n, dim) * rng.uniform(0.5, 5, (n, 1))
    scores = rng.uniform(0.3, 1.0, n)
    templates = rng.randint(0, 10, n)
    medias = rng.randint(0, 25, n)
    template1, template2 = np.meshgrid(np.unique(templates), np.unique(templates))
    template1, template2 = template1.ravel(), template2.ravel()
    labels = (template1 % 3) == (template2 % 3)
    img_feats = np.concatenate([plain, mirror], axis=1)

    unnormalised = (plain + mirror) / 2 if flip else plain
    _, ids, n1 = ijb_protocol.evaluate(unnormalised, templates, medias, scores, template1,
                                       template2, labels, pooling="N1")
    expected_ids, expected = insightface_template_features(
        insightface_image_features(img_feats, scores, flip, True), templates, medias)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(n1, expected, atol=1e-12)

    embeddings = plain / np.linalg.norm(plain, axis=1, keepdims=True)
    metrics, _, n0 = ijb_protocol.evaluate(embeddings, templates, medias, scores, template1,
                                           template2, labels, pooling="N0")
    assert metrics["pooling"] == "N0"
    np.testing.assert_allclose(n0, insightface_template_features(
        insightface_image_features(img_feats, scores, False, False), templates, medias)[1],
        atol=1e-12)
    assert np.abs(n0 - n1).max() > 0.05


def test_media_shared_by_two_templates_is_pooled_per_template():
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    ids, got = ijb_protocol.template_features(feats, np.array([1, 1, 2, 2]), np.array([7, 7, 7, 8]))
    np.testing.assert_allclose(got, insightface_template_features(
        feats, np.array([1, 1, 2, 2]), np.array([7, 7, 7, 8]))[1])
    assert ids.tolist() == [1, 2]


@pytest.mark.parametrize("seed", range(8))
def test_roc_and_tar_at_far_equal_brute_force(seed):
    rng = np.random.RandomState(seed)
    n = rng.randint(4, 120)
    labels = rng.rand(n) < rng.uniform(0.2, 0.8)
    labels[:2] = [True, False]
    # Rounded scores: many ties, including across mated and non-mated pairs.
    scores = np.round(rng.randn(n) + labels * rng.uniform(0, 2), rng.choice([1, 2, 6]))
    for drop in (True, False):
        fpr, tpr, thr = ijb_protocol.roc_curve(labels, scores, drop_intermediate=drop)
        bfpr, btpr, bthr = brute_roc(labels.tolist(), scores.tolist(), drop)
        np.testing.assert_allclose(fpr, bfpr)
        np.testing.assert_allclose(tpr, btpr)
        np.testing.assert_array_equal(thr, bthr)
    fars = (1e-6, 1e-3, 0.01, 0.05, 0.1, 0.3, 1.0)
    got = ijb_protocol.tar_at_far(labels, scores, fars)
    for key, value in brute_tar_at_far(labels.tolist(), scores.tolist(), fars).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_tar_nearest_reads_the_top_of_a_vertical_run_as_insightface():
    """Scores in descending order: non-mated, then 2 mated (a tie between them), non-mated, 1
    mated, 1 non-mated... The ROC point nearest FAR 1/4 is a vertical run: FPR 1/4 at TPR 0 (the
    first non-mated accepted) and at TPR 2/3 (both mated accepted next). insightface flips the
    ROC and reads 2/3; the first point of the run reads 0. At FAR 0.375 the points at FPR 1/4
    and 1/2 are equally near: insightface takes the one above (FPR 1/2, TPR 1)."""
    labels = np.array([False, True, True, False, True, False, False, False])
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    fars = (0.25, 0.375)
    got = ijb_protocol.tar_at_far(labels, scores, fars)
    expected = insightface_nearest(labels.tolist(), scores.tolist(), fars)
    assert expected["tar_nearest@far=0.25"] == pytest.approx(2 / 3)
    assert expected["tar_nearest@far=0.375"] == 1.0
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def tie_heavy_scores(seed=1, mated=3000, nonmated=300000):
    """Seeded IJB-like scores rounded to 1/1000 (ties within and across the two kinds)."""
    rng = np.random.RandomState(seed)
    scores = np.round(np.r_[rng.normal(0.48, 0.12, mated), rng.normal(0.0, 0.1, nonmated)], 3)
    return np.r_[np.ones(mated, bool), np.zeros(nonmated, bool)], scores


def test_tar_nearest_on_a_tie_heavy_set_equals_insightface():
    """3,000 mated / 300,000 non-mated scores with ties (issue 26's case): the flip matters at
    FAR 1e-5, where the nearest ROC point is a vertical run."""
    labels, scores = tie_heavy_scores()
    got = ijb_protocol.tar_at_far(labels, scores, (1e-5, 1e-4))
    fpr, tpr, _ = ijb_protocol.roc_curve(labels, scores)
    # insightface's reading (eval_ijbc.py, as above) on the same ROC.
    for far in (1e-5, 1e-4):
        flipped_fpr, flipped_tpr = np.flipud(fpr), np.flipud(tpr)
        _, min_index = min(list(zip(abs(flipped_fpr - far), range(len(flipped_fpr)))))
        assert got[f"tar_nearest@far={far:g}"] == flipped_tpr[min_index], far
    # The first point of the run (the old reading) is lower by the run's height.
    first = tpr[int(np.argmin(np.abs(fpr - 1e-5)))]
    assert got["tar_nearest@far=1e-05"] - first > 0.002


def test_tar_at_far_below_one_over_the_negatives_is_tar_at_far_zero():
    labels = np.array([1, 1, 1, 0, 0], bool)
    scores = np.array([0.9, 0.5, 0.1, 0.6, 0.2])
    got = ijb_protocol.tar_at_far(labels, scores, fars=(1e-6, 0.5))
    assert got["tar@far=1e-06"] == pytest.approx(1 / 3.0)  # only 0.9 beats every impostor
    assert got["far@far=1e-06"] == 0.0
    assert got["threshold@far=1e-06"] == pytest.approx(0.9)
    assert got["tar@far=0.5"] == pytest.approx(2 / 3.0)
    assert got["num_mated"] == 3 and got["num_nonmated"] == 2


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0]])
def test_tar_at_far_needs_both_kinds_of_pairs(labels):
    with pytest.raises(ijb_protocol.IJBError, match="mated and non-mated"):
        ijb_protocol.tar_at_far(np.array(labels, bool), np.zeros(len(labels)))


def test_pair_with_unknown_template_is_an_error():
    with pytest.raises(ijb_protocol.IJBError, match="template 9"):
        ijb_protocol.pair_scores(np.array([1, 2]), np.eye(2), np.array([1, 9]), np.array([2, 2]))


@pytest.mark.parametrize("kind, text, message", [
    ("face_tid_mid", "a.jpg 1\n", "line 1: expected 3 fields"),
    ("face_tid_mid", "a.jpg 1 2\nb.jpg x 3\n", "line 2: expected integers"),
    ("template_pair_label", "1 2 3\n", "0 or 1"),
    ("name_5pts_score", "a.jpg " + "1 " * 10 + "\n", "expected 12 fields"),
    ("name_5pts_score", "a.jpg " + "1 " * 10 + "nan\n", "non-finite"),
    ("name_5pts_score", ("a.jpg " + "1 " * 11 + "\n") * 2, "listed twice"),
    ("face_tid_mid", "\n\n", "holds no"),
])
def test_malformed_meta_files(tmp_path, kind, text, message):
    path = tmp_path / f"ijbc_{kind}.txt"
    path.write_text(text)
    reader = {"face_tid_mid": ijb_protocol.read_template_media,
              "template_pair_label": ijb_protocol.read_template_pairs,
              "name_5pts_score": ijb_protocol.read_landmarks}[kind]
    with pytest.raises(ijb_protocol.IJBError, match=message):
        reader(str(path))


def test_meta_paths_finds_the_prefix(tmp_path):
    for kind in ijb_protocol.META_FILES:
        (tmp_path / f"ijbb_{kind}.txt").write_text("x")
    assert ijb_protocol.meta_paths(str(tmp_path))[0] == "ijbb"
    with pytest.raises(ijb_protocol.IJBError, match="ijbc_face_tid_mid.txt"):
        ijb_protocol.meta_paths(str(tmp_path), "ijbc")


# ---------------------------------------------------------------------------------------------
# The CLI on a synthetic IJB-style set.

IDENTITIES = 5
PER_IDENTITY = 4
ALIGN = tiny_model.SIZE


def make_ijb_set(root, seed=0):
    """Loose crops of generated faces, the three meta files; returns the truth for checks."""
    rng = np.random.RandomState(seed)
    image_dir = os.path.join(root, "loose_crop")
    meta_dir = os.path.join(root, "meta")
    os.makedirs(image_dir)
    os.makedirs(meta_dir)
    faces, landmarks, scores = [], {}, {}
    lines_tid, lines_pts = [], []
    template_identity = {}
    for identity in range(IDENTITIES):
        for image_index in range(PER_IDENTITY):
            face, _ = synthetic_faces.render_image(seed, "verification", identity, image_index, 112)
            angle, scale = rng.uniform(-0.4, 0.4), rng.uniform(0.8, 1.3)
            matrix = scale * np.array([[math.cos(angle), -math.sin(angle)],
                                       [math.sin(angle), math.cos(angle)]])
            matrix = np.hstack([matrix, (rng.uniform(60, 100, 2) - matrix @ [56, 72])[:, None]])
            # The aligned face placed in a 160x160 loose crop: matrix maps face -> crop.
            loose = align.warp_affine(np.asarray(face.convert("RGB")), matrix, (160, 160))
            name = f"{len(faces)}.png"
            Image.fromarray(np.clip(np.round(loose), 0, 255).astype(np.uint8)).save(
                os.path.join(image_dir, name))
            points = align.transform_points(matrix, align.TEMPLATE_112)
            score = float(rng.uniform(0.5, 1.0))
            template = 1 + identity * 2 + image_index // 2
            media = 1000 + identity * 10 + (0 if image_index < 2 else image_index)
            template_identity[template] = identity
            faces.append((name, template, media))
            landmarks[name] = points
            scores[name] = score
            lines_tid.append(f"{name} {template} {media}")
            lines_pts.append(" ".join([name] + [f"{v:.4f}" for v in points.reshape(-1)]
                                      + [f"{score:.6f}"]))
    pairs = []
    ids = sorted(template_identity)
    for i, t1 in enumerate(ids):
        for t2 in ids[i + 1:]:
            pairs.append((t1, t2, int(template_identity[t1] == template_identity[t2])))
    with open(os.path.join(meta_dir, "ijbc_face_tid_mid.txt"), "w") as f:
        f.write("\n".join(lines_tid) + "\n")
    with open(os.path.join(meta_dir, "ijbc_name_5pts_score.txt"), "w") as f:
        f.write("\n".join(lines_pts) + "\n")
    with open(os.path.join(meta_dir, "ijbc_template_pair_label.txt"), "w") as f:
        f.write("\n".join(f"{t1} {t2} {label}" for t1, t2, label in pairs) + "\n")
    return image_dir, meta_dir, faces, pairs


@pytest.fixture(scope="module")
def ijb_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ijb"))
    weights = tiny_model.projection(3)
    model = tiny_model.build_saved_model(os.path.join(root, "model"), weights)
    return (model, tiny_model.Reference(weights)) + make_ijb_set(root)


def run_cli(args):
    return cli.run_main(ijb.define_flags, ijb.main, ["ijb"] + list(args))


@pytest.mark.parametrize("pooling", ["N1", "N0"])
def test_cli_matches_insightface_reference(ijb_set, tmp_path, capsys, pooling):
    model, reference, image_dir, meta_dir, faces, pairs = ijb_set
    out = str(tmp_path / "report")
    code = run_cli([f"--model={model}", f"--image_dir={image_dir}",
                    f"--meta_dir={meta_dir}", f"--report_dir={out}",
                    f"--align_size={ALIGN}", "--save_features", "--batch_size=7"]
                   + ([] if pooling == "N1" else ["--pooling=N0"]))
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    # One row per pooling mode and reading (the model has embedding_norm), as insightface.
    assert [line.split()[:2] for line in printed[1:5]] == [
        ["N0", "TAR@<=FAR"], ["N0", "nearest"], ["N1", "TAR@<=FAR"], ["N1", "nearest"]]

    # Reference: align each face, embed with flip in numpy (N0: the project's flip TTA;
    # N1: insightface's F2 + N1 block on the raw features), weight by the detector score,
    # pool as insightface, score pairs, read the ROC by loops.
    landmarks = ijb_protocol.read_landmarks(os.path.join(meta_dir, "ijbc_name_5pts_score.txt"))
    feats, raw = [], []
    for name, _, _ in faces:
        aligned = align.align_face(Image.open(os.path.join(image_dir, name)),
                                   landmarks[name][0], ALIGN)
        feats.append(reference(aligned) * landmarks[name][1])
        raw.append(np.concatenate([reference.unnormalised(aligned),
                                   reference.unnormalised(aligned[:, ::-1])]))
    if pooling == "N1":
        feats = insightface_image_features(
            np.array(raw), np.array([landmarks[name][1] for name, _, _ in faces]))
    templates = np.array([t for _, t, _ in faces])
    medias = np.array([m for _, _, m in faces])
    ids, expected = insightface_template_features(np.array(feats), templates, medias)
    saved = np.load(os.path.join(out, "templates.npz"), allow_pickle=False)
    np.testing.assert_array_equal(saved["templates"], ids)
    np.testing.assert_allclose(saved["features"], expected, atol=2e-5)

    # The report's figures are the brute-force reading of the scores of the saved features.
    row = {t: i for i, t in enumerate(ids)}
    features = saved["features"].astype(np.float64)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    scores = [float(features[row[a]] @ features[row[b]]) for a, b, _ in pairs]
    labels = [bool(y) for _, _, y in pairs]
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    expected_tar = brute_tar_at_far(labels, scores, ijb_protocol.FARS)
    for key, value in expected_tar.items():
        assert report[key] == pytest.approx(value, abs=0.02), key  # float32 features
        assert report["pooling_modes"][pooling][key] == report[key]
    assert report["pooling"] == pooling and sorted(report["pooling_modes"]) == ["N0", "N1"]
    assert report["num_templates"] == IDENTITIES * 2
    assert report["num_mated"] == sum(labels)
    assert report["extra"]["flip"] is True
    assert os.path.getsize(os.path.join(out, "roc.png")) > 0


def test_cli_model_without_embedding_norm_gives_n0_only(ijb_set, tmp_path, capsys):
    _, _, image_dir, meta_dir, _, _ = ijb_set
    model = tiny_model.build_saved_model(str(tmp_path / "old"), tiny_model.projection(3),
                                         norm_output=False)
    args = [f"--model={model}", f"--image_dir={image_dir}", f"--meta_dir={meta_dir}",
            f"--align_size={ALIGN}"]
    code = run_cli(args + [f"--report_dir={tmp_path / 'r'}"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "has no embedding_norm output: N0 pooling only" in err
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == ["N0", "N0"]
    with open(tmp_path / "r" / "report.json") as f:
        report = json.load(f)
    assert report["pooling"] == "N0" and list(report["pooling_modes"]) == ["N0"]
    code = run_cli(args + [f"--report_dir={tmp_path / 'r2'}", "--pooling=N1"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: --pooling=N1 needs the embedding_norm output")


def test_cli_one_line_errors(ijb_set, tmp_path, capsys):
    model, _, image_dir, meta_dir, _, _ = ijb_set
    broken = tmp_path / "meta"
    broken.mkdir()
    for name in os.listdir(meta_dir):
        text = open(os.path.join(meta_dir, name)).read()
        if "5pts" in name:
            text = "\n".join(text.splitlines()[1:])  # the first face loses its landmarks
        (broken / name).write_text(text)
    code = run_cli([f"--model={model}", f"--image_dir={image_dir}",
                    f"--meta_dir={broken}", f"--report_dir={tmp_path / 'r'}"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: 1 faces have no landmarks in the 5-point file (first: 0.png)"
    code = run_cli([f"--model={model}", f"--image_dir={image_dir}",
                    f"--meta_dir={tmp_path}", f"--report_dir={tmp_path / 'r'}"])
    assert code == 1
    assert "does not hold the meta files" in capsys.readouterr().err
