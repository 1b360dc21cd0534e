"""The saved benchmark results and the README table made from them."""

import importlib.util
import json
from pathlib import Path

from carafe._readme import read_section

ROOT = Path(__file__).resolve().parent.parent


def load_report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_are_complete():
    report = load_report()
    runs = report.load_results()
    assert runs, "no saved benchmark results under benchmarks/results/"
    for path, data in runs:
        assert {"machine", "device", "results", "ratios"} <= set(data), path
        assert "cpu" in data["machine"] and "torch" in data["machine"], path
        methods = {(r["size"], r["method"]) for r in data["results"]}
        for size in {r["size"] for r in data["results"]}:
            assert {(size, "carafe"), (size, "unfold")} <= methods, path
        for row in data["results"]:
            assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0
            assert "forward_peak_extra_bytes" in row


def test_readme_table_is_generated_from_results():
    report = load_report()
    section = read_section(ROOT / "README.md", (report.START, report.END))
    assert section.strip() == report.render(report.load_results()).strip(), (
        "README benchmark table is stale: run `python benchmarks/report.py --update-readme`")


def test_report_renders_a_run(tmp_path):
    report = load_report()
    data = {
        "machine": {"cpu": "Test CPU", "torch_threads": 2, "torch": "2.x", "git_commit": "abc"},
        "device": "cpu", "k": 5, "group_size": 1, "scale_factor": 2, "quick": False,
        "results": [
            {"size": "1x1x1x1", "method": "carafe", "forward_ms": 1.0,
             "forward_backward_ms": 2.0, "forward_peak_extra_bytes": 2**20, "output_bytes": 2**20},
            {"size": "1x1x1x1", "method": "unfold", "forward_ms": 30.0,
             "forward_backward_ms": 60.0, "forward_peak_extra_bytes": 2**25,
             "output_bytes": 2**20},
        ],
        "ratios": {"1x1x1x1": {"unfold": {"forward_time": 30.0, "forward_backward_time": 30.0,
                                          "forward_peak_memory": 32.0}}},
    }
    (tmp_path / "bench_op_cpu_test.json").write_text(json.dumps(data))
    text = report.render(report.load_results(tmp_path))
    assert "| 1x1x1x1 | unfold | 30.00 | 60.00 | 30.0x | 32.0 (1.0) |" in text
