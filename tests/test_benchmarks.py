"""The saved benchmark results and the docs tables made from them."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from carafe_lab.readme import read_section

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


def test_docs_table_is_generated_from_results():
    report = load_report()
    assert report.BENCH_PAGE == ROOT / "docs" / "kernels.md"
    section = read_section(report.BENCH_PAGE, (report.START, report.END))
    assert section.strip() == report.render(report.load_results()).strip(), (
        "docs/kernels.md benchmark table is stale: run `python benchmarks/report.py --update-docs`"
    )


def test_report_renders_a_run(tmp_path):
    report = load_report()
    data = {
        "machine": {"cpu": "Test CPU", "torch_threads": 2, "torch": "2.x", "git_commit": "abc"},
        "device": "cpu",
        "k": 5,
        "group_size": 1,
        "scale_factor": 2,
        "quick": False,
        "results": [
            {
                "size": "1x1x1x1",
                "method": "carafe",
                "forward_ms": 1.0,
                "forward_backward_ms": 2.0,
                "forward_peak_extra_bytes": 2**20,
                "output_bytes": 2**20,
            },
            {
                "size": "1x1x1x1",
                "method": "unfold",
                "forward_ms": 30.0,
                "forward_backward_ms": 60.0,
                "forward_peak_extra_bytes": 2**25,
                "output_bytes": 2**20,
            },
        ],
        "ratios": {
            "1x1x1x1": {
                "unfold": {
                    "forward_time": 30.0,
                    "forward_backward_time": 30.0,
                    "forward_peak_memory": 32.0,
                }
            }
        },
    }
    (tmp_path / "bench_op_cpu_test.json").write_text(json.dumps(data))
    text = report.render(report.load_results(tmp_path))
    assert "| 1x1x1x1 | unfold | 30.00 | 60.00 | 30.0x | 32.0 (1.0) |" in text


ROUND = {
    "ms": 20.0,
    "pct_of_sgemm": 26.0,
    "pct_of_roofline": 40.0,
    "bound": "memory",
    "sgemm_gflops": 245.5,
    "copy_GBps": 17.2,
}


def test_report_states_both_ceilings():
    report = load_report()
    data = {"roofline": {"2x256x50x76": {"forward": ROUND, "forward_backward": ROUND}}}
    line = report.roofline_line(data)
    assert (
        "2x256x50x76: forward 20.00 ms, 26% of the compute ceiling (246 GFLOP/s), 40% of "
        "the roofline (memory-bound; copy 17.2 GB/s), fwd+bwd 20.00 ms"
    ) in line


def test_report_states_the_reused_memory_timings():
    report = load_report()
    data = {
        "reused_memory": {
            "how": "glibc mallopt",
            "results": [
                {
                    "size": "2x256x50x76",
                    "method": "carafe",
                    "forward_ms": 4.5,
                    "forward_backward_ms": 18.0,
                },
                {
                    "size": "2x256x50x76",
                    "method": "compiled",
                    "forward_ms": 90.0,
                    "forward_backward_ms": 360.0,
                },
            ],
            "ratios": {
                "2x256x50x76": {"compiled": {"forward_time": 20.0, "forward_backward_time": 20.0}}
            },
            "roofline": {"2x256x50x76": {"forward": ROUND, "forward_backward": ROUND}},
        }
    }
    line = report.reused_memory_line(data)
    assert "(glibc mallopt)" in line
    assert (
        "2x256x50x76: carafe forward 4.50 ms, fwd+bwd 18.00 ms (torch.compile peer "
        "20.0x / 20.0x slower); in rounds, forward 20.00 ms, 26% of the compute"
    ) in line


def test_report_states_the_dtypes():
    report = load_report()
    row = lambda ms, ratio: {
        "forward_ms": ms,
        "forward_backward_ms": 2 * ms,  # noqa: E731
        "forward_vs_float32": ratio,
        "forward_backward_vs_float32": ratio,
    }
    data = {
        "dtypes": {
            "2x256x50x76": {
                "float32": row(4.0, 1.0),
                "bfloat16": row(6.0, 1.5),
                "compiled_bfloat16": {
                    "forward_ms": 60.0,
                    "forward_backward_ms": 240.0,
                    "forward_vs_carafe_bfloat16": 10.0,
                    "forward_backward_vs_carafe_bfloat16": 20.0,
                },
            }
        }
    }
    line = report.dtypes_line(data)
    assert (
        "2x256x50x76: float32 4.00 / 8.00 ms (1.00x / 1.00x), bfloat16 6.00 / 12.00 ms "
        "(1.50x / 1.50x); torch.compile peer in bfloat16 10.0x / 20.0x slower"
    ) in line


def test_paired_shares_measures_rounds():
    from carafe_lab.roofline import copy_bandwidth, paired_shares

    assert copy_bandwidth("cpu", nbytes=2**16, repeat=3) > 0
    x = torch.ones(10000)
    r = paired_shares(lambda: x.sum(), 2e-5, 4e4, "cpu", rounds=3, sgemm_n=64, copy_bytes=2**16)
    assert r["rounds"] == 3 and r["bound"] in ("memory", "compute") and r["ms"] > 0
    assert r["sgemm_gflops"] > 0 and r["copy_GBps"] > 0
    floor = max(r["compute_floor_ms"], r["memory_floor_ms"])
    assert 0 < r["pct_of_sgemm"] <= r["pct_of_roofline"] + 1e-9
    assert floor > 0


def test_git_commit_marks_uncommitted_changes(tmp_path):
    import subprocess

    from carafe_lab.environment import git_commit

    assert git_commit(tmp_path) is None  # not a checkout
    run = lambda *a: subprocess.run(
        ["git", *a],
        cwd=tmp_path,
        check=True,  # noqa: E731
        capture_output=True,
    )
    run("init", "-q")
    (tmp_path / "f.txt").write_text("a\n")
    run("add", "f.txt")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = git_commit(tmp_path, short=True)
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "other.txt").write_text("untracked files do not count\n")
    assert git_commit(tmp_path, short=True) == clean
    (tmp_path / "f.txt").write_text("b\n")
    assert git_commit(tmp_path, short=True) == clean + "-dirty"


def test_roofline_accounting():
    """The floors both benchmarks measure against (carafe_lab.roofline)."""
    from carafe_lab.roofline import floor_bytes, shares, useful_gflop

    # 2x256x100x152 -> x2, k=5, float32: forward moves features + masks + output
    f, m, o = 2 * 256 * 100 * 152, 2 * 25 * 200 * 304, 2 * 256 * 200 * 304
    assert floor_bytes(2, 256, 100, 152, 5, 1, 2, 4, backward=False) == 4 * (f + m + o)
    assert floor_bytes(2, 256, 100, 152, 5, 1, 2, 2, backward=True) == 2 * (o + 2 * f + 2 * m)
    # groups multiply the masks only
    assert floor_bytes(1, 8, 4, 4, 3, 2, 1, 4, backward=False) == 4 * (8 * 16 + 9 * 2 * 16 + 8 * 16)
    assert useful_gflop(2, 256, 100, 152, 5, 2) == pytest.approx(2 * 25 * o / 1e9)
    assert useful_gflop(2, 256, 100, 152, 5, 2, backward=True) == pytest.approx(6 * 25 * o / 1e9)
    # 2 GFLOP at 100 GFLOP/s: 20 ms; 1 GB at 10 GB/s: 100 ms; measured 400 ms
    r = shares(2.0, 1e9, 0.4, 100.0, 10e9)
    assert r["bound"] == "memory"
    assert r["compute_floor_ms"] == pytest.approx(20) and r["memory_floor_ms"] == pytest.approx(100)
    assert r["pct_of_sgemm"] == pytest.approx(5) and r["pct_of_roofline"] == pytest.approx(25)
    r = shares(2.0, 1e8, 0.04, 100.0, 10e9)
    assert r["bound"] == "compute" and r["pct_of_roofline"] == pytest.approx(50)


def _gpu_check():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_accounting_and_summary():
    """What `make gpu-check` computes from its measurements (the GPU part
    itself runs only on a GPU machine)."""
    gc = _gpu_check()
    assert gc.pytest_counts("3 failed, 40 passed, 2 skipped in 9.1s") == {
        "failed": 3,
        "passed": 40,
        "skipped": 2,
    }
    row = {
        "size": "2x256x100x152",
        "dtype": "float32",
        "carafe": {
            "forward_us": 60.0,
            "forward_pct_of_copy": 70.0,
            "backward_us": 90.0,
            "backward_pct_of_copy": 50.0,
            "forward_backward_us": 160.0,
        },
        "mmcv": {"forward_us": 120.0, "forward_backward_us": 800.0},
        "mmcv_over_carafe_forward": 2.0,
        "mmcv_over_carafe_forward_backward": 5.0,
        "window_similarity": {"forward_us": 40.0, "forward_backward_us": 150.0},
        "window_similarity_unfold": {"forward_us": 400.0, "forward_backward_us": 900.0},
        "unfold_over_similarity_forward": 10.0,
        "unfold_over_similarity_forward_backward": 6.0,
    }
    report = {
        "machine": {"gpu": "NVIDIA H100", "torch": "2.11.0", "driver": "580"},
        "steps": {
            "build": {"ok": True, "seconds": 60.0},
            "pytest_cuda": {"ok": False, "seconds": 9.0, "counts": {"failed": 1}},
            **{
                f"sanitizer_{tool}": {"ok": tool != "synccheck", "seconds": 30.0, "tail": "..."}
                for tool in gc.SANITIZER_TOOLS
            },
        },
        "benchmark": {"copy_GBps": 3000.0, "rows": [row]},
        "ncu_profile": [
            {
                "kernel": "void carafe::kernels::carafe_forward_window_kernel"
                "<float, int, 5, 2>(const float *, int)",
                "metrics": {"GPU Speed Of Light Throughput: Duration [usecond]": 210.0},
            }
        ],
    }
    text = gc.summary(report)
    assert "pytest_cuda            FAILED" in text and "3000 GB/s" in text
    # the warp votes (__all_sync) are checked too, and each tool has its line
    assert gc.SANITIZER_TOOLS == ("memcheck", "racecheck", "synccheck")
    assert "sanitizer_memcheck     ok 30.0" in text and "sanitizer_racecheck    ok 30.0" in text
    assert "sanitizer_synccheck    FAILED 30.0" in text
    assert "mmcv/ours fwd 2.00x, fwd+bwd 5.00x" in text
    assert "window_similarity fwd 40.0 us, fwd+bwd 150.0 us (unfold/ours 10.00x, 6.00x)" in text
    assert "ncu carafe_forward_window_kernel<float, int, 5, 2>: time 210 usecond" in text


def test_gpu_check_reads_ncu_csv():
    """The ncu step's parsing of `ncu --csv --page details` output (the
    program's own lines and ncu's ==PROF== notes interleaved)."""
    gc = _gpu_check()
    head = (
        '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
        '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
        '"Metric Value"'
    )

    def row(i, kernel, section, name, unit, value):
        return (
            f'"{i}","7","python3","127.0.0.1","{kernel}","1","7","(256, 1, 1)",'
            f'"(950, 1, 1)","0","9.0","{section}","{name}","{unit}","{value}"'
        )

    fwd, gf = "carafe_forward_window_kernel", "carafe_grad_features_chunk_kernel"
    text = "\n".join(
        [
            "==PROF== Connected to process 7",
            head,
            row(0, fwd, "GPU Speed Of Light Throughput", "Duration", "usecond", "1,210.5"),
            "some line the program printed",
            row(0, fwd, "GPU Speed Of Light Throughput", "DRAM Throughput", "%", "41.2"),
            row(0, fwd, "Launch Statistics", "Registers Per Thread", "register/thread", "95"),
            row(1, gf, "Occupancy", "Achieved Occupancy", "%", "23.9"),
            row(1, gf, "Occupancy", "Block Limit Registers", "block", "n/a"),
            "==PROF== Disconnected from process 7",
        ]
    )
    launches = gc.parse_ncu_csv(text)
    assert [launch["kernel"] for launch in launches] == [fwd, gf]
    assert launches[0]["metrics"]["GPU Speed Of Light Throughput: Duration [usecond]"] == 1210.5
    assert launches[0]["block"] == "(256, 1, 1)"
    assert launches[1]["metrics"]["Occupancy: Block Limit Registers [block]"] == "n/a"
    assert gc.parse_ncu_csv("==PROF== nothing profiled\n") == []
    # highlights match by section name as ncu's CSV writes it
    highlights = dict(gc.ncu_highlights(launches[0]["metrics"]))
    assert highlights == {"time": "1210 usecond", "DRAM": "41.2%", "regs": "95 register/thread"}
    assert (
        gc.short_kernel_name(
            "void carafe::kernels::carafe_grad_features_chunk_kernel<c10::Half, int, 5, 2>"
            "(const c10::Half *, const c10::Half *, c10::Half *, carafe::Dims<int>, int, int)"
        )
        == "carafe_grad_features_chunk_kernel<Half, int, 5, 2>"
    )
    assert gc.short_kernel_name(fwd) == fwd


def test_sass_report_finds_innermost_loops():
    """scripts/sass_report.py's reading of cuobjdump output: only loops with
    no loop inside are reported, with their opcode counts."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "sass_report.py"
    spec = importlib.util.spec_from_file_location("sass_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sass = "\n".join(
        f"        /*{addr:04x}*/                   {text} ;   /* 0x0 */"
        for addr, text in [
            (0x00, "S2R R0, SR_TID.X"),
            (0x10, "LDG.E R2, desc[UR4][R4.64]"),
            (0x20, "FFMA R3, R2, R2, R3"),
            (0x30, "@P0 LDG.E.64.CONSTANT R6, desc[UR4][R8.64]"),
            (0x40, "FFMA R3, R6, R7, R3"),
            (0x50, "@!P1 BRA 0x10"),  # inner loop 0x10-0x50
            (0x60, "STG.E desc[UR4][R10.64], R3"),
            (0x70, "@P2 BRA 0x0"),  # outer loop
            (0x80, "EXIT"),
        ]
    )
    loops = module.innermost_loops(sass)
    assert len(loops) == 1
    assert loops[0] == {"LDG": 2, "FFMA": 2, "BRA": 1}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_gpu_check_refuses_without_a_gpu(capsys):
    assert _gpu_check().main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_docs_export_table_is_generated_from_results():
    report = load_report()
    assert report.EXPORT_PAGE == ROOT / "docs" / "export.md"
    section = read_section(report.EXPORT_PAGE, report.EXPORT_MARKERS)
    assert section.strip() == report.render_export(report.load_export_results()).strip(), (
        "docs/export.md table is stale: run `python benchmarks/report.py --update-docs`"
    )


def test_docs_convert_table_is_generated_from_results():
    report = load_report()
    assert report.CONVERT_PAGE == ROOT / "docs" / "convert.md"
    runs = report.load_convert_results()
    assert runs, "no committed bench_convert result"
    section = read_section(report.CONVERT_PAGE, report.CONVERT_MARKERS)
    assert section.strip() == report.render_convert(runs).strip(), (
        "docs/convert.md table is stale: run `python benchmarks/report.py --update-docs`"
    )
