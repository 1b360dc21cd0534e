"""The ablation harness: every study runs end to end on the sr task at a tiny
size and writes results.json (every variant), table.md and a figure."""

import json

import pytest

pytest.importorskip("skimage", reason="the sr task needs scikit-image's photographs")
pytest.importorskip("matplotlib", reason="figures need matplotlib")

from carafe.ablations import harness, paper  # noqa: E402
from carafe.ablations.studies import STUDIES  # noqa: E402


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_runs(study, tmp_path):
    out = harness.run_study(study, "sr", quick=True, seeds=2, out_root=tmp_path, steps=2,
                            log=lambda *_: None)
    results = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in results["rows"]] == [label for label, _, _ in STUDIES[study]]
    for row in results["rows"]:
        assert len(row["seeds"]) == 2
        for s in row["seeds"]:
            assert 10 < s["psnr"] < 60 and 0 < s["ssim"] <= 1
            assert 10 < s["bicubic_psnr"] < 60
        assert row["psnr_std"] >= 0 and row["params_c256_s2"] >= 0
    table = (out / "table.md").read_text()
    assert all(row["label"] in table for row in results["rows"])
    assert (out / "figure.png").stat().st_size > 1000


def test_paper_numbers_are_marked():
    for study, variants in STUDIES.items():
        for label, _, _ in variants:
            cell = paper.paper_cell(study, label)
            assert cell in ("not verified", "not in the paper") or "unverified" not in cell


def test_unknown_study_and_task(tmp_path):
    with pytest.raises(ValueError, match="unknown study"):
        harness.run_study("bogus", out_root=tmp_path)
    with pytest.raises(ValueError, match="task 'det' is not available"):
        harness.run_study("upsamplers", "det", out_root=tmp_path)
