"""`make gpu-check-prepare`: what `make gpu-check` needs on a GPU machine
without network, fetched here (a machine with the package index) into
build/gpu-check/ (carry that folder to the GPU machine):

- mmcv_src/: the CARAFE files of mmcv 2.1.0's source distribution (the GPU
  benchmark's peer, built there by benchmarks/mmcv_peer/build.py; never
  copied into the repository);
- wheels/: pure-Python test dependencies a bare CUDA PyTorch image may lack
  (expecttest, for torch.library.opcheck), for Python 3.12.
"""

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "gpu-check"
MMCV = "mmcv==2.1.0"
WHEELS = ["expecttest"]


def main():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from mmcv_peer.build import FILES

    OUT.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.rmtree(OUT / "mmcv_peer_build", ignore_errors=True)  # built here, for this torch
    with tempfile.TemporaryDirectory() as tmp:
        # --no-build-isolation: pip only reads the sdist's metadata (no compile)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                "-q",
                MMCV,
                "-d",
                tmp,
            ],
            check=True,
        )
        (sdist,) = Path(tmp).glob("mmcv-*.tar.gz")
        with tarfile.open(sdist) as tar:
            prefix = tar.getnames()[0].split("/")[0]
            for name in FILES:
                member = tar.getmember(f"{prefix}/{name}")
                target = OUT / "mmcv_src" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    print(f"mmcv CARAFE sources ({len(FILES)} files of {sdist.name}) -> {OUT / 'mmcv_src'}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "-q",
            "-d",
            str(OUT / "wheels"),
            *WHEELS,
        ],
        check=True,
    )
    print(f"wheels -> {OUT / 'wheels'}: " + ", ".join(p.name for p in (OUT / "wheels").glob("*")))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file()) / 2**10
    print(f"build/gpu-check: {size:.0f} KiB to carry")


if __name__ == "__main__":
    main()
