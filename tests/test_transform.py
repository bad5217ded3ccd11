"""One Transform value (data_tools.transform): made by the converter, stored in the manifest and
the exports, applied by default by every program that takes photos (export.embed in all modes,
export.gallery), which prints which one; the shared flags override it; old manifests and
exports still read.

The tiny 8x8 model of test_embed_cli with the transform of test_embed_transform; expected
embeddings come from the converter's own crop/resize of the frames (an independent path:
image_files.transform_image, then the numpy reference of the model).
"""

import json
import os

import numpy as np
import pytest

import cli
from data_tools import manifest
from data_tools.transform import Transform, TransformError
from export import exporters, gallery
from tests import _folder_fixtures as ff
from tests.test_embed_cli import run_cli
from tests.test_embed_transform import (
    CROP,
    SIZE,
    TRANSFORM,
    converted,
    model,  # noqa: F401 - fixture
    model_with_transform,  # noqa: F401 - fixture
    write_frame,
)


def test_transform_round_trips_through_json_and_compares_by_value():
    cropped = Transform("70,60,180,190", 112)
    assert cropped == Transform((70, 60, 180, 190), 112) == Transform.from_dict(
        json.loads(json.dumps(cropped.to_dict())))
    assert cropped.to_dict() == {"crop_box": [70, 60, 180, 190], "image_size": 112,
                                 "resampling": "lanczos", "record_shape": [112, 112]}
    assert cropped.describe() == "crop_box=70,60,180,190 image_size=112"
    aligned = Transform(None, 112, align=True)
    assert aligned.to_dict() == {"crop_box": None, "image_size": 112, "resampling": "lanczos",
                                 "record_shape": [112, 112], "align": True}
    assert Transform.from_dict(aligned.to_dict()) == aligned != cropped
    assert aligned.describe() == "align image_size=112"
    # An identity conversion is no transform; a crop box and an alignment do not mix.
    assert Transform.make() is None and Transform.from_dict(Transform().to_dict()) is None
    with pytest.raises(TransformError, match="crop_box or align"):
        Transform("0,0,10,10", align=True)
    with pytest.raises(TransformError, match="bicubic"):
        Transform.from_dict({"crop_box": None, "image_size": 8, "resampling": "bicubic"})


def test_record_shape_is_derived_or_recorded_and_an_unknown_one_is_no_difference():
    assert Transform("4,2,36,26").record_shape == (24, 32)  # a crop box keeps its size
    assert Transform("4,2,36,26", 16).record_shape == (16, 16)
    # Kept at their own size: the converter records the one shape of its sources.
    kept = Transform.of_conversion(sizes=[(250, 200), (250, 200)])
    assert kept.is_identity and kept.record_shape == (200, 250)
    assert Transform.from_dict(kept.to_dict()) == kept
    assert Transform.of_conversion(sizes=[(250, 200), (100, 100)]).record_shape is None
    # An older manifest does not know the shape: the same conversion all the same.
    older = Transform.from_dict({"crop_box": None, "image_size": None, "resampling": None})
    assert older is None and kept.same_conversion(older)
    assert not kept.same_conversion(Transform.of_conversion(sizes=[(100, 100)]))
    assert not kept.same_conversion(Transform("4,2,36,26"))
    with pytest.raises(TransformError, match="height, width"):
        Transform.from_dict({"crop_box": None, "image_size": None, "record_shape": "big"})


def test_manifests_old_and_new_give_the_transform(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [2, 2], size=40)
    ff.convert_quietly(tmp_path / "in", tmp_path / "cropped", crop_box="4,2,36,26",
                       image_size=16)
    written = manifest.read_manifest(str(tmp_path / "cropped"))
    assert Transform.from_manifest(written) == Transform((4, 2, 36, 26), 16)
    # Before the "transform" key: the options; an aligned conversion: options["align"].
    del written["transform"]
    assert Transform.from_manifest(written) == Transform((4, 2, 36, 26), 16)
    aligned = {"kind": "images", "shards": [], "options": {
        "crop_box": None, "image_size": None, "align": {"image_size": 96, "report": "r"}},
        "transform": {"crop_box": None, "image_size": None, "resampling": None}}
    assert Transform.from_manifest(aligned) == Transform(None, 96, align=True)
    assert manifest.conversion_transform(aligned)["align"] is True


def test_an_export_without_transform_json_still_loads(model, capsys):  # noqa: F811
    export_dir, _ = model
    status, out, err = run_cli(capsys, "--model", export_dir,
                               write_frame(export_dir + "_f.jpg", np.random.RandomState(9)))
    assert status == 0, err
    assert "transform: none (the model records no transform.json)" in err


def test_image_arguments_get_the_models_transform_by_default(model_with_transform,  # noqa: F811
                                                             tmp_path, capsys):
    export_dir, reference = model_with_transform
    rng = np.random.RandomState(5)
    paths = [write_frame(str(tmp_path / f"f{i}.jpg"), rng) for i in range(2)]
    status, out, err = run_cli(capsys, "--model", export_dir, "--output", tmp_path / "e",
                               *paths)
    assert status == 0, err
    assert f"transform: crop_box={CROP} image_size={SIZE} (the model's" in err
    saved = np.load(str(tmp_path / "e.npy"))
    np.testing.assert_allclose(saved, [reference(converted(p), True) for p in paths], atol=2e-6)


def test_folder_gets_the_models_transform_by_default(model_with_transform,  # noqa: F811
                                                     tmp_path, capsys):
    export_dir, reference = model_with_transform
    rng = np.random.RandomState(6)
    paths = {}
    for identity in ("Ann", "Bob"):
        relpath = f"{identity}/{identity}_0001.jpg"
        paths[relpath] = write_frame(str(tmp_path / "faces" / relpath), rng)
    status, _, err = run_cli(capsys, "--model", export_dir, "--folder", tmp_path / "faces",
                             "--output", tmp_path / "emb")
    assert status == 0, err
    assert "transform: crop_box=" in err
    names = (tmp_path / "emb.names.txt").read_text().splitlines()
    np.testing.assert_allclose(np.load(str(tmp_path / "emb.npy")),
                               [reference(converted(paths[n]), True) for n in names], atol=2e-6)


def test_align_on_a_crop_box_model_says_it_never_saw_aligned_faces(model_with_transform,  # noqa: F811,E501
                                                                     tmp_path, capsys,
                                                                     monkeypatch):
    export_dir, _ = model_with_transform
    from export import embedder as embedder_lib  # noqa: PLC0415

    seen = {}

    def fake_align(paths, image_size=112, detector=None, names=None, fallbacks=None):
        seen["image_size"] = image_size
        return [open(p, "rb").read() for p in paths], []

    monkeypatch.setattr(embedder_lib, "align_photos", fake_align)
    path = write_frame(str(tmp_path / "raw.jpg"), np.random.RandomState(7))
    status, _, err = run_cli(capsys, "--model", export_dir, "--align", path)
    assert status == 0, err
    assert "never saw aligned faces" in err
    assert "transform: align image_size=112 (--align)" in err
    assert seen["image_size"] == 112


def test_gallery_applies_the_models_transform(model_with_transform, tmp_path,  # noqa: F811
                                              capsys):
    export_dir, reference = model_with_transform
    rng = np.random.RandomState(8)
    faces = tmp_path / "faces"
    frames = {name: write_frame(str(faces / name / f"{name}_0001.jpg"), rng)
              for name in ("Ann", "Bob", "Cid")}
    index = str(tmp_path / "g.npz")

    def run(*args):
        return cli.run_main(gallery.define_flags, gallery.main, ["gallery"] + list(args))

    assert run("enrol", f"--model={export_dir}", f"--folder={faces}", f"--index={index}") == 0
    err = capsys.readouterr().err
    assert f"transform: crop_box={CROP} image_size={SIZE} (the model's" in err
    stored = np.load(index)
    expected = {name: reference(converted(path), True) for name, path in frames.items()}
    for label, embedding in zip(stored["labels"], stored["embeddings"]):
        np.testing.assert_allclose(embedding, expected[str(label)], atol=2e-6)
    # The search photo: the same frame, so the same crop gives cosine 1 to its identity.
    assert run("search", f"--index={index}", frames["Bob"]) == 0
    out, err = capsys.readouterr()
    assert "transform: crop_box=" in err
    assert out.splitlines()[0].startswith(f"{frames['Bob']}: Bob (cosine 1.0000")


def test_exports_store_the_transform_as_json(model, tmp_path):  # noqa: F811
    path = exporters.write_export_transform(str(tmp_path), Transform(None, 96, align=True)
                                            .to_dict())
    with open(path) as f:
        assert Transform.from_dict(json.load(f)) == Transform(None, 96, align=True)
    # An older transform.json (no record_shape) reads as the same conversion, its shape derived.
    assert Transform.from_dict(TRANSFORM).to_dict() == dict(
        TRANSFORM, record_shape=[TRANSFORM["image_size"]] * 2)
    assert os.path.basename(path) == "transform.json"


def test_format_checks_refuse_records_converted_otherwise(model_with_transform, tmp_path,  # noqa: F811,E501
                                                          capsys):
    from export import format_checks  # noqa: PLC0415
    from export.deploy_formats import ConvertError  # noqa: PLC0415

    export_dir, _ = model_with_transform
    records = tmp_path / "pairs"
    records.mkdir()
    record = {"kind": "pairs", "shards": [], "transform": dict(TRANSFORM)}
    (records / "manifest.json").write_text(json.dumps(record))
    format_checks.check_records_transform(export_dir, str(records))
    assert f"transform: crop_box={CROP} image_size={SIZE} (the check records' conversion; " \
           f"the model's: crop_box={CROP} image_size={SIZE})" in capsys.readouterr().err
    record["transform"]["crop_box"] = None
    (records / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ConvertError, match=f"converted with image_size={SIZE}, the model's "
                       f"records with crop_box={CROP}"):
        format_checks.check_records_transform(export_dir, str(records))
    format_checks.check_records_transform(export_dir, str(records), allow_mismatch=True)


def test_an_identity_transform_is_the_models_own(model, tmp_path, capsys):  # noqa: F811
    """Records stored as they were: the export's transform.json says so, and embed says it is
    the model's (not that the model records none)."""
    import shutil  # noqa: PLC0415

    export_dir = str(tmp_path / "model")
    shutil.copytree(model[0], export_dir)
    exporters.write_export_transform(export_dir, Transform().to_dict())
    frame = write_frame(str(tmp_path / "f.jpg"), np.random.RandomState(10))
    status, _, err = run_cli(capsys, "--model", export_dir, frame)
    assert status == 0, err
    assert "transform: none (the model's: its records were stored as they were)" in err


def test_an_aligned_models_folder_is_aligned_by_default(model, tmp_path, capsys,  # noqa: F811
                                                        monkeypatch):
    import shutil  # noqa: PLC0415

    from export import embedder as embedder_lib  # noqa: PLC0415

    export_dir = str(tmp_path / "model")
    shutil.copytree(model[0], export_dir)
    exporters.write_export_transform(export_dir, Transform(None, 96, align=True).to_dict())
    aligned = []

    def fake_align(paths, image_size=112, detector=None, names=None, fallbacks=None):
        aligned.extend((name, image_size) for name in names)
        return [open(p, "rb").read() for p in paths], []

    monkeypatch.setattr(embedder_lib, "align_photos", fake_align)
    rng = np.random.RandomState(11)
    for name in ("Ann", "Bob"):
        write_frame(str(tmp_path / "faces" / name / f"{name}_0001.jpg"), rng)
    status, _, err = run_cli(capsys, "--model", export_dir, "--folder", tmp_path / "faces",
                             "--output", tmp_path / "emb")
    assert status == 0, err
    assert "transform: align image_size=96 (the model's" in err
    assert sorted(aligned) == [("Ann/Ann_0001.jpg", 96), ("Bob/Bob_0001.jpg", 96)]
    # A crop box on an aligned model: applied, with a note.
    status, _, err = run_cli(capsys, "--model", export_dir, "--crop_box", CROP,
                             str(tmp_path / "faces" / "Ann" / "Ann_0001.jpg"))
    assert status == 0, err
    assert "note: the model was trained on aligned faces" in err
