"""The fold-10 identification protocol on real LFW-a (needs ../shared/data; slow; skipped without
it): fold-10 identities linked, cropped like the recipe's records, split into gallery and probes,
and scored with ``export.identification`` end to end.

The model is the tiny 8x8 projection of ``tests/tiny_model.py`` (the protocol is under test, not
a network); the README's figures come from a trained model with the same command.
"""

import json
import os

import pytest

import cli
from data_tools import conversion, holdout_split
from export import identification
from tests import real_lfw, tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)] + real_lfw.MARKS  # minutes under load


def test_fold10_identification_protocol(real_lfw_dir, tmp_path, capsys):
    identities = str(tmp_path / "identities")
    summary = holdout_split.link_identities(real_lfw_dir, real_lfw.PAIRS, [10], identities)
    assert summary == {"identities": 451, "images": 1611, "identities_with_2_or_more": 175,
                       "single_image_identities": 276}
    records = str(tmp_path / "records")
    converted = conversion.convert_folder(identities, records, crop_box="70,60,180,190",
                                              image_size=112, num_workers=2, progress=False)
    assert (converted["num_images"], converted["num_skipped"]) == (1611, 0)

    model = tiny_model.build_saved_model(str(tmp_path / "model"), tiny_model.projection(0))
    out = str(tmp_path / "report")
    assert cli.run_main(identification.define_flags, identification.main, [
        "identification", f"--model={model}", f"--records={records}", f"--report_dir={out}"]) == 0
    assert "gallery: 175 identities; probes: 1160 mated, 276 non-mated" in capsys.readouterr().out
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    assert (report["num_gallery_identities"], report["num_mated_probes"],
            report["num_nonmated_probes"]) == (175, 1160, 276)
    assert 0.0 <= report["rank1"] <= report["rank5"] <= 1.0
    assert 0.0 <= report["tpir@fpir=0.01"] <= report["tpir@fpir=0.1"] <= report["rank1"]
    # Recall@K leaves out the 276 single-image identities.
    assert report["num_queries"] == 1611 - 276
