"""ONNX export of models that use the CARAFE op (``carafe::carafe``).

PyTorch's ONNX exporter (``torch.onnx.export(..., dynamo=True)``, torch >=
2.6, with the ``onnx`` and ``onnxscript`` packages) traces the op through its
fake kernel; :func:`onnx_translation` tells it what to write for it:

- by default, **standard ONNX operators only** (opset 18: Pad, Resize
  (nearest), Slice, Reshape, Mul, Add), so ONNX Runtime, TensorRT and
  OpenVINO run the graph without a plugin. The reassembly is unrolled over
  the k*k taps: tap (ky, kx) is a slice of the zero-padded, nearest-upsampled
  input, weighted by its mask channel and accumulated, so no k*k-times
  expanded tensor is ever built. Batch and spatial sizes stay dynamic (sizes
  are read with Shape, never baked in).
- with ``custom_node=True``, one ``mmcv::MMCVCARAFE`` node (the name,
  domain and attributes of mmcv's own ONNX symbolic: kernel_size and
  group_size ints, scale_factor float) for runtimes that register a fused
  kernel.

Semantics: taps outside the input read the zero padding, i.e. contribute
``weight * 0``; for finite weights (all that softmax-normalised CARAFEPack
kernels produce) that equals the op's rule of skipping them. A NaN or inf
weight on such a tap gives NaN here, where the op gives a finite value.

Example::

    import carafe.export
    program = carafe.export.export_onnx(model, (x,), "model.onnx")
"""

from __future__ import annotations

import torch

OPSET = 18
CUSTOM_DOMAIN = "mmcv"  # mmcv's symbolic: g.op('mmcv::MMCVCARAFE', ...)


def _standard_ops(features, masks, kernel_size: int, group_size: int, scale_factor: int):
    """carafe::carafe in standard ONNX operators (traced by the exporter:
    the Python loops unroll into k*k Slice/Mul/Add groups)."""
    from onnxscript import opset18 as op

    k, G, s = kernel_size, group_size, scale_factor
    r = k // 2
    padded = op.Pad(features, op.Constant(value_ints=[0, 0, r, r, 0, 0, r, r]))
    if s > 1:
        # nearest with floor on asymmetric coordinates repeats each pixel s times
        up = op.Resize(
            padded,
            None,
            op.Constant(value_floats=[1.0, 1.0, float(s), float(s)]),
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
    else:
        up = padded
    n = op.Shape(features, start=0, end=1)
    c = op.Shape(features, start=1, end=2)
    out_hw = op.Mul(op.Shape(features, start=2, end=4), op.Constant(value_ints=[s, s]))
    g = op.Constant(value_ints=[G])
    # features as (N, G, C/G, sH, sW), masks as (N, G, k*k, sH, sW)
    grouped = op.Concat(n, g, op.Div(c, g), out_hw, axis=0)
    m = op.Reshape(masks, op.Concat(n, g, op.Constant(value_ints=[k * k]), out_hw, axis=0))
    spatial = op.Constant(value_ints=[2, 3])
    tap_axis = op.Constant(value_ints=[2])
    out = None
    for ky in range(k):
        for kx in range(k):
            # output pixel p reads input row p//s + ky - r, i.e. row p + s*ky of `up`
            starts = op.Constant(value_ints=[s * ky, s * kx])
            window = op.Reshape(op.Slice(up, starts, op.Add(starts, out_hw), spatial), grouped)
            t = ky * k + kx
            weight = op.Slice(
                m, op.Constant(value_ints=[t]), op.Constant(value_ints=[t + 1]), tap_axis
            )
            term = op.Mul(window, weight)
            out = term if out is None else op.Add(out, term)
    return op.Reshape(out, op.Concat(n, c, out_hw, axis=0))


def _custom_node():
    """A translation writing one mmcv::MMCVCARAFE node, as mmcv's symbolic
    does. onnxscript needs the node's schema to build it; it is declared
    here (two float inputs of one type, one output, three attributes)."""
    import onnxscript
    from onnx.defs import OpSchema

    schema = OpSchema(
        "MMCVCARAFE",
        CUSTOM_DOMAIN,
        1,
        inputs=[OpSchema.FormalParameter("features", "T"), OpSchema.FormalParameter("masks", "T")],
        outputs=[OpSchema.FormalParameter("output", "T")],
        type_constraints=[
            (
                "T",
                ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"],
                "float tensors",
            )
        ],
        attributes=[
            OpSchema.Attribute("kernel_size", OpSchema.AttrType.INT, "k"),
            OpSchema.Attribute("group_size", OpSchema.AttrType.INT, "G"),
            OpSchema.Attribute("scale_factor", OpSchema.AttrType.FLOAT, "s"),
        ],
    )
    node = onnxscript.values.Op(
        onnxscript.values.Opset(CUSTOM_DOMAIN, 1), "MMCVCARAFE", op_schema=schema
    )

    def mmcv_carafe(features, masks, kernel_size: int, group_size: int, scale_factor: int):
        return node(
            features,
            masks,
            kernel_size=kernel_size,
            group_size=group_size,
            scale_factor=float(scale_factor),
        )

    return mmcv_carafe


def onnx_translation(custom_node: bool = False) -> dict:
    """{torch.ops.carafe.carafe.default: translation}, for
    ``torch.onnx.export(..., dynamo=True, custom_translation_table=...)``."""
    return {torch.ops.carafe.carafe.default: _custom_node() if custom_node else _standard_ops}


def dynamic_image_shapes(args) -> tuple:
    """dynamic_shapes for torch.export: batch, height and width of every 4-D
    tensor argument marked dynamic (Dim.AUTO: the exporter keeps them
    symbolic unless the model pins them), other arguments static."""
    auto = torch.export.Dim.AUTO
    return tuple(
        {0: auto, 2: auto, 3: auto} if isinstance(a, torch.Tensor) and a.dim() == 4 else None
        for a in args
    )


def export_onnx(
    model: torch.nn.Module,
    args: tuple,
    path=None,
    *,
    custom_node: bool = False,
    dynamic_shapes=None,
    input_names=None,
    output_names=None,
    optimize: bool = True,
    **kwargs,
):
    """Export model(*args) to ONNX with the CARAFE op translated (see the
    module docstring); writes path if given; returns the ONNXProgram.

    Args:
        model: an nn.Module, put in eval mode by the caller.
        args: example inputs, a tuple.
        custom_node: write mmcv::MMCVCARAFE nodes instead of standard operators.
        dynamic_shapes: as torch.export takes them; default: batch, height and
            width of every 4-D tensor input dynamic. torch.export specialises
            a dimension whose example size is 1 (and folds it into the graph),
            so give examples with batch >= 2 and height, width >= 2.
    """
    if not isinstance(args, tuple):
        raise TypeError(
            f"export_onnx: args must be a tuple of example inputs, got {type(args).__name__}"
        )
    try:
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "export_onnx needs the onnx and onnxscript packages: pip install 'carafe-lab[export]'"
        ) from e
    program = torch.onnx.export(
        model,
        args,
        dynamo=True,
        opset_version=OPSET,
        custom_translation_table=onnx_translation(custom_node),
        dynamic_shapes=dynamic_image_shapes(args) if dynamic_shapes is None else dynamic_shapes,
        input_names=input_names,
        output_names=output_names,
        optimize=optimize,
        verbose=False,
        **kwargs,
    )
    if program is None:
        raise RuntimeError("export_onnx: torch.onnx.export returned no program")
    if path is not None:
        program.save(str(path))
    return program
