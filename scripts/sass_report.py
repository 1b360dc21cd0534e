"""What the compiler made of the CUDA kernels, without a GPU: registers,
spills and the instruction mix of each kernel's inner loops in the machine
code (SASS) for one architecture.

    python scripts/sass_report.py                  # the working tree, sm_90
    python scripts/sass_report.py --rev d5a920f    # the kernels of a commit
    python scripts/sass_report.py --arch sm_80 --match 'Half, int, 5'

Compiles csrc/cuda/carafe_kernel.cu with nvcc (-Xptxas -v for registers and
spills), disassembles it with cuobjdump and, for every kernel whose
demangled name contains --match, prints each innermost loop (a backward
branch with no loop inside) with its instruction count, loads, multiply-adds
and instructions per multiply-add (FFMA; DFMA for float64). The loop with
the fewest instructions per multiply-add is the bounds-test-free one
docs/kernels.md quotes. Needs nvcc (CUDA_HOME) and cuobjdump (the toolkit's, or the
copy that ships with Triton).
"""

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool(name):
    """A CUDA tool: on PATH, under CUDA_HOME, or (cuobjdump) Triton's copy."""
    found = shutil.which(name)
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    candidates = [found, os.path.join(home, "bin", name)]
    try:
        import triton

        candidates.append(
            os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
        )
    except ImportError:
        pass
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    sys.exit(f"sass_report: {name} not found (set CUDA_HOME, or install triton for cuobjdump)")


def include_dirs():
    """torch's headers, the Python headers and the nvidia-* wheels' CUDA
    headers (as setup.py adds them)."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    dirs = include_paths(device_type="cpu") + [sysconfig.get_paths()["include"]]
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "cu*", "include"))
    return dirs


def compile_kernels(src_root, arch, out):
    """nvcc -> an object file; returns ptxas's report text."""
    cmd = [
        tool("nvcc"),
        "-O3",
        "-std=c++20",
        f"-arch={arch}",
        "-Xptxas",
        "-v",
        "-c",
        str(src_root / "csrc" / "cuda" / "carafe_kernel.cu"),
        "-o",
        str(out),
        f"-I{src_root / 'csrc'}",
        "-DTORCH_EXTENSION_NAME=sass_report",
        *[f"-I{d}" for d in include_dirs()],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sass_report: nvcc failed:\n{proc.stderr[-3000:]}")
    return proc.stderr + proc.stdout


def demangle(names):
    out = subprocess.run(
        ["c++filt"], input="\n".join(names), capture_output=True, text=True
    ).stdout.splitlines()
    return [
        re.sub(r"\(.*", "", n).replace("carafe::kernels::", "").replace("c10::", "") for n in out
    ]


def resources(ptxas_text):
    """mangled kernel name -> (registers, spill store bytes)."""
    found = {}
    pattern = r"Compiling entry function '(\w+)'.*?\n(.*?)Used (\d+) registers"
    for m in re.finditer(pattern, ptxas_text, re.S):
        spill = re.search(r"(\d+) bytes spill stores", m.group(2))
        found[m.group(1)] = (int(m.group(3)), int(spill.group(1)) if spill else 0)
    return found


def innermost_loops(sass):
    """[(instructions, Counter of opcodes)] for each backward branch whose
    body holds no other backward branch."""
    ins = []
    for line in sass.splitlines():
        m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if not m:
            continue
        text = m.group(2).strip()
        op = re.sub(r"^@!?U?P[T0-9]+\s+", "", text).split()[0]
        ins.append((int(m.group(1), 16), op, text))
    loops = []
    for addr, op, text in ins:
        target = re.search(r"0x([0-9a-f]+)", text) if op == "BRA" else None
        if target and int(target.group(1), 16) < addr:
            loops.append((int(target.group(1), 16), addr))
    inner = [
        (a, b)
        for a, b in loops
        if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)
    ]
    return [
        collections.Counter(op.split(".")[0] for x, op, _ in ins if a <= x <= b) for a, b in inner
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--rev", help="a git revision whose csrc/ to compile (default: the tree)")
    parser.add_argument(
        "--match", default="float, int, 5", help="substring of the demangled kernel names to report"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src_root = ROOT
        if args.rev:
            src_root = Path(tmp) / "src"
            src_root.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.rev, "csrc"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(src_root)], input=archive, check=True)
        obj = Path(tmp) / "kernels.o"
        res = resources(compile_kernels(src_root, args.arch, obj))
        cuobjdump = tool("cuobjdump")
        mangled = sorted(res)
        print(f"{args.rev or 'working tree'}, {args.arch}: kernels matching {args.match!r}")
        for name, pretty in zip(mangled, demangle(mangled)):
            if args.match not in pretty:
                continue
            regs, spill = res[name]
            print(f"\n{pretty}: {regs} registers, {spill} bytes spilled")
            sass = subprocess.run(
                [cuobjdump, "-sass", "-fun", name, str(obj)], capture_output=True, text=True
            ).stdout
            for ops in innermost_loops(sass):
                total = sum(ops.values())
                fma = ops["FFMA"] + ops["DFMA"]
                per = f"{total / fma:.2f} per multiply-add" if fma else "no multiply-adds"
                print(
                    f"  loop: {total} instructions, {ops['LDG']} loads, {fma} multiply-adds "
                    f"({per}); most used: " + ", ".join(f"{op} {n}" for op, n in ops.most_common(6))
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
