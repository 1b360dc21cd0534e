"""ONNX export (carafe.export): graphs of standard operators that ONNX
Runtime runs, matching PyTorch at sizes other than the export example."""

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="needs the export extra (onnx, onnxscript)")
pytest.importorskip("onnxscript", reason="needs the export extra (onnx, onnxscript)")
ort = pytest.importorskip("onnxruntime", reason="needs the export extra (onnxruntime)")

import carafe  # noqa: E402
from carafe.export import export_onnx  # noqa: E402

STANDARD = {
    "Pad",
    "Resize",
    "Slice",
    "Reshape",
    "Mul",
    "Add",
    "Shape",
    "Concat",
    "Div",
    "Constant",
    "Squeeze",
    "Unsqueeze",
    "Conv",
    "DepthToSpace",
    "Softmax",
    "Relu",
    "Transpose",
    "Cast",
    "Identity",
    "Gather",
    "Expand",
}


def run_onnx(path, *inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def check_graph(path, custom=False):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=not custom)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    return model, ops


class Reassemble(torch.nn.Module):
    """CARAFE with kernels from a conv (the op alone, softmax-normalised)."""

    def __init__(self, C, k, G, s):
        super().__init__()
        self.k, self.G, self.s = k, G, s
        self.kernels = torch.nn.Conv2d(C, k * k * G * s * s, 3, padding=1)
        self.reassemble = carafe.CARAFE(k, G, s)

    def forward(self, x):
        m = torch.nn.functional.pixel_shuffle(self.kernels(x), self.s)
        n, _, h, w = m.shape
        m = m.view(n, self.G, self.k * self.k, h, w).softmax(2).view(n, -1, h, w)
        return self.reassemble(x, m)


@pytest.mark.parametrize(
    "k,G,s", [(1, 1, 2), (3, 2, 2), (5, 1, 2), (5, 4, 3), (7, 2, 4), (3, 1, 1)]
)
def test_carafe_module_exports_to_standard_ops(tmp_path, k, G, s):
    torch.manual_seed(0)
    model = Reassemble(8, k, G, s).eval()
    path = tmp_path / "carafe.onnx"
    export_onnx(model, (torch.randn(2, 8, 6, 5),), path)
    _, ops = check_graph(path)
    assert all(domain == "" for domain, _ in ops), ops  # the default domain only
    assert {op for _, op in ops} <= STANDARD, ops
    for shape in [(1, 8, 6, 5), (2, 8, 9, 13), (3, 8, 1, 4)]:  # other sizes than exported
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = run_onnx(path, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_carafepack_in_a_network_exports(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        carafe.CARAFEPack(16, 2, up_kernel=5, up_group=2, compressed_channels=8),
        torch.nn.Conv2d(16, 16, 3, padding=1),
        carafe.CARAFEPack(16, 2, up_kernel=3, encoder_kernel=1),
    ).eval()
    path = tmp_path / "net.onnx"
    export_onnx(model, (torch.randn(2, 3, 32, 32),), path, input_names=["image"])
    check_graph(path)
    for shape in [(1, 3, 32, 32), (2, 3, 48, 20)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = run_onnx(path, x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_custom_node_option(tmp_path):
    model = carafe.CARAFEPack(8, 2, up_kernel=5, up_group=2).eval()
    path = tmp_path / "custom.onnx"
    export_onnx(model, (torch.randn(1, 8, 6, 6),), path, custom_node=True)
    model_proto, ops = check_graph(path, custom=True)
    assert ("mmcv", "MMCVCARAFE") in ops and ("", "Slice") not in ops
    node = next(n for n in model_proto.graph.node if n.op_type == "MMCVCARAFE")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"kernel_size": 5, "group_size": 2, "scale_factor": 2.0}


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="args must be a tuple"):
        export_onnx(carafe.CARAFEPack(8, 2), torch.randn(1, 8, 4, 4), tmp_path / "x.onnx")


def test_faster_rcnn_with_carafe_fpn_runs_in_onnx_runtime(tmp_path):
    """The offline Faster R-CNN (CARAFE FPN) up to the RPN head's raw
    outputs: ONNX Runtime on offline images of two sizes reproduces what
    mmdet's own path (data_preprocessor, extract_feat, rpn_head) gives."""
    pytest.importorskip("mmdet", reason="needs the mmdet extra")
    from pathlib import Path

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import carafe.mmdet  # noqa: F401
    from carafe.mmdet.export import export_detector
    from carafe_lab.experiments.data import load_sources, make_image

    register_all_modules()
    config = (
        Path(__file__).resolve().parent.parent
        / "experiments"
        / "configs"
        / "faster-rcnn_r18_fpn-carafe_offline.py"
    )
    torch.manual_seed(0)
    detector = MODELS.build(Config.fromfile(str(config)).model)
    detector.init_weights()
    detector.eval()
    objects, backgrounds = load_sources()
    rng = np.random.default_rng(0)

    def offline_images(n, size):  # (n, 3, size, size) float BGR, as mmdet loads them
        images = [make_image(rng, size, objects, backgrounds, 6, 6, "smooth")[0] for _ in range(n)]
        return torch.from_numpy(np.stack(images)[..., ::-1].copy()).permute(0, 3, 1, 2).float()

    path = tmp_path / "faster_rcnn_raw.onnx"
    # an example batch of 2: torch.export specialises dimensions of size 1
    export_detector(detector, offline_images(2, 128), path)
    check_graph(path)
    for n, size in [(1, 128), (3, 192)]:
        images = offline_images(n, size)
        with torch.no_grad():
            batch = detector.data_preprocessor({"inputs": list(images.to(torch.uint8))})
            features = detector.extract_feat(batch["inputs"])
            scores, deltas = detector.rpn_head(features)
        expected = [t.numpy() for t in (*features, *scores, *deltas)]
        got = run_onnx(path, images)
        assert len(got) == len(expected) == 15
        for a, b in zip(got, expected):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
