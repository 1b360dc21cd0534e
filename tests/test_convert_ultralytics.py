"""carafe.convert_upsamplers on a real client: ultralytics' YOLOv8n, built from
its bundled model yaml (no weights), converted, trained a few steps on
generated images, and exported to ONNX that ONNX Runtime runs.

Needs the ``yolo`` extra (ultralytics); skipped, with the reason, without it.
"""

import os
import tempfile
import warnings
from types import SimpleNamespace

import pytest
import torch

# ultralytics reads these at import: no network, settings outside $HOME and the checkout
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="carafe-yolo-settings-"))

tasks = pytest.importorskip(
    "ultralytics.nn.tasks", reason="needs the yolo extra: pip install 'carafe-lab[yolo]'"
)

import carafe  # noqa: E402
from carafe.convert import convert_upsamplers  # noqa: E402


def yolov8n():
    torch.manual_seed(0)
    model = tasks.DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)  # the loss gains model.loss reads
    return model


def rectangles(n=2, size=128, seed=0):
    """A batch in ultralytics' format: bright rectangles (class 0 and 1) on a
    dark noisy background; img (N, 3, H, W) in [0, 1], cls (M, 1), bboxes
    (M, 4) normalised centre-x, centre-y, width, height, batch_idx (M,)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(n, 3, size, size, generator=g) * 0.2
    cls, boxes, index = [], [], []
    for b in range(n):
        for k in range(2):
            w, h = torch.randint(size // 5, size // 2, (2,), generator=g).tolist()
            x0 = int(torch.randint(0, size - w, (1,), generator=g))
            y0 = int(torch.randint(0, size - h, (1,), generator=g))
            img[b, :, y0 : y0 + h, x0 : x0 + w] = 0.9 if k == 0 else 0.6
            cls.append([float(k)])
            boxes.append([(x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size])
            index.append(float(b))
    return {
        "img": img,
        "cls": torch.tensor(cls),
        "bboxes": torch.tensor(boxes),
        "batch_idx": torch.tensor(index),
    }


def train(model, batch, steps=15, lr=1e-3):
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.sum().item())
    return losses


@pytest.fixture(scope="module")
def converted():
    """YOLOv8n with its two nn.Upsample layers converted, then trained 15
    steps: (model, report, losses)."""
    model = yolov8n()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left alone, no functional call
        model, report = convert_upsamplers(model, torch.zeros(2, 3, 64, 64))
    losses = train(model, rectangles())
    return model, report, losses


def test_yolov8n_upsampling_layers_convert_with_their_channels_and_routing(converted):
    model, report, _ = converted
    assert [(r.name, r.channels, r.scale_factor) for r in report.replaced] == [
        ("model.10", (256,), 2),
        ("model.13", (128,), 2),
    ]
    assert report.left_alone == [] and report.functional == []
    for index in (10, 13):
        layer = model.model[index]
        assert isinstance(layer, carafe.CARAFEPack)
        # ultralytics routes each layer's input by these attributes
        assert (layer.f, layer.i, layer.np) == (-1, index, 0)
    added = {k for k in model.state_dict() if k.startswith(("model.10.", "model.13."))}
    assert added == {
        f"model.{i}.{conv}.{p}"
        for i in (10, 13)
        for conv in ("channel_compressor", "content_encoder")
        for p in ("weight", "bias")
    }


def test_converted_yolov8n_trains_on_generated_images(converted):
    model, _, losses = converted
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses
    for index in (10, 13):
        grad = model.model[index].content_encoder.weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_converted_yolov8n_exports_to_standard_onnx_that_onnx_runtime_runs(converted, tmp_path):
    pytest.importorskip("onnxscript", reason="needs the export extra")
    ort = pytest.importorskip("onnxruntime", reason="needs the export extra")
    import onnx

    import carafe.export

    model, _, _ = converted
    model.eval()
    head = model.model[-1]
    # the Detect head's export mode: one output (N, 4 + classes, anchors),
    # anchors computed from the input's shape inside the graph
    head.export, head.format, head.dynamic = True, "onnx", True
    try:
        x = rectangles(2, 64)["img"]
        path = tmp_path / "yolov8n-carafe.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            carafe.export.export_onnx(model, (x,), path, input_names=["images"])
        graph = onnx.load(str(path)).graph
        assert {node.domain for node in graph.node} <= {""}, "only standard ONNX operators"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for images in (x, rectangles(3, 128, seed=1)["img"][:, :, :96, :]):
            with torch.no_grad():
                expected = model(images)
            got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
            # rows 0-3 are box coordinates in pixels (float32 spacing at 480 px
            # is 3e-5), compared as fractions of the image; rows 4- class scores
            scale = torch.ones(got.shape[1], 1)
            scale[:4] = max(images.shape[-2:])
            torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=1e-4)
    finally:
        head.export, head.dynamic = False, False
