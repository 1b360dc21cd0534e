"""CARAFE / CARAFEPack: shapes, mmcv-compatible structure and initialisation."""

import pytest
import torch
import torch.nn.functional as F
from conftest import devices

import carafe
from carafe.reference import carafe_reference


def test_carafe_module_matches_function():
    features = torch.randn(2, 8, 5, 6)
    masks = torch.randn(2, 2 * 9, 10, 12)
    module = carafe.CARAFE(kernel_size=3, group_size=2, scale_factor=2)
    torch.testing.assert_close(module(features, masks), carafe.carafe(features, masks, 3, 2, 2))
    assert "kernel_size=3" in repr(module)


def test_pack_parameter_count_and_names():
    # The paper's default upsampler at C=256, s=2: mmcv's CARAFEPack has
    # 256*64 + 64 + 64*9*100 + 100 = 74,148 parameters.
    pack = carafe.CARAFEPack(channels=256, scale_factor=2)
    assert sum(p.numel() for p in pack.parameters()) == 74_148
    assert {k: tuple(v.shape) for k, v in pack.state_dict().items()} == {
        "channel_compressor.weight": (64, 256, 1, 1),
        "channel_compressor.bias": (64,),
        "content_encoder.weight": (100, 64, 3, 3),
        "content_encoder.bias": (100,),
    }


def test_pack_initialisation():
    torch.manual_seed(0)
    pack = carafe.CARAFEPack(channels=64, scale_factor=2, up_group=2, compressed_channels=32)
    w = pack.channel_compressor.weight
    bound = (6.0 / (64 + 32)) ** 0.5  # xavier uniform, gain 1
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert pack.content_encoder.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert not pack.channel_compressor.bias.any() and not pack.content_encoder.bias.any()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("s,G,k_up,k_enc,dil", [(2, 1, 5, 3, 1), (4, 2, 3, 1, 1), (3, 4, 5, 5, 2)])
def test_pack_forward(device, s, G, k_up, k_enc, dil):
    torch.manual_seed(0)
    pack = (
        carafe.CARAFEPack(
            channels=16,
            scale_factor=s,
            up_kernel=k_up,
            up_group=G,
            encoder_kernel=k_enc,
            encoder_dilation=dil,
            compressed_channels=8,
        )
        .double()
        .to(device)
    )
    # Larger encoder weights than the init so the kernels are far from uniform.
    torch.nn.init.normal_(pack.content_encoder.weight, std=0.3)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64, device=device, requires_grad=True)
    out = pack(x)
    assert out.shape == (2, 16, 5 * s, 7 * s)
    kernels = pack.predict_kernels(x)
    assert kernels.shape == (2, G * k_up * k_up, 5 * s, 7 * s)
    sums = kernels.view(2, G, k_up * k_up, 5 * s, 7 * s).sum(2)
    torch.testing.assert_close(sums, torch.ones_like(sums))
    # Same as the spec applied to mmcv's encoder -> pixel_shuffle -> softmax.
    enc = pack.content_encoder(pack.channel_compressor(x))
    masks = F.pixel_shuffle(enc, s).view(2, G, k_up * k_up, 5 * s, 7 * s).softmax(2)
    expected = carafe_reference(x, masks.reshape(2, -1, 5 * s, 7 * s), k_up, G, s)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    assert x.grad is not None and pack.content_encoder.weight.grad.abs().sum() > 0


def test_pack_state_dict_roundtrip():
    a = carafe.CARAFEPack(channels=32, scale_factor=2)
    b = carafe.CARAFEPack(channels=32, scale_factor=2)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 32, 4, 4)
    torch.testing.assert_close(a(x), b(x))


def test_core_imports_only_torch():
    import subprocess
    import sys

    code = (
        "import sys, carafe; bad = [m for m in ('mmcv', 'mmdet', 'mmengine', 'matplotlib', "
        "'numpy.testing', 'IPython') if m in sys.modules]; print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_library_never_names_the_research_toolkit():
    # One-way imports: carafe/ must work without carafe_lab, so it does not
    # even mention it (a string import would hide from the import check above).
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "carafe"
    named = [
        str(p.relative_to(root.parent))
        for p in sorted(root.rglob("*"))
        if p.suffix in {".py", ".pyi", ".cpp", ".h", ".cu", ".txt", ".md"}
        and "carafe_lab" in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert named == [], f"carafe/ names carafe_lab in {named}"


def _import_built_for(version, env=None):
    import os
    import subprocess
    import sys

    code = (
        "import sys, types, warnings; m = types.ModuleType('carafe._build_info'); "
        f"m.TORCH_VERSION = {version!r}; sys.modules['carafe._build_info'] = m; "
        "warnings.simplefilter('always'); import carafe"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_a_torch_other_than_the_build_is_reported():
    """The kernels are compiled against one torch; importing them under
    another minor release is an error naming both versions (simulated with a
    fake build record), a patch release only a warning."""
    import subprocess
    import sys

    import torch

    proc = _import_built_for("1.0.0+fake")
    assert proc.returncode != 0
    assert (
        "ImportError" in proc.stderr
        and "built against torch 1.0.0+fake" in proc.stderr
        and f"torch {torch.__version__} is imported" in proc.stderr
    ), proc.stderr
    forced = _import_built_for("1.0.0+fake", {"CARAFE_ALLOW_TORCH_MISMATCH": "1"})
    assert forced.returncode == 0 and "RuntimeWarning" in forced.stderr, forced.stderr
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    patch = _import_built_for(f"{major}.{minor}.999")
    assert patch.returncode == 0 and "same minor release" in patch.stderr, patch.stderr
    ok = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", "import carafe"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr  # the real build matches
