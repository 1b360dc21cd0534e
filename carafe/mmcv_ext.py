"""``mmcv._ext`` for mmcv-lite: the compiled ops mmdet's two-stage detectors
call, built on torchvision's ops and ours, so that mmdet 3.3.0 runs without
compiling mmcv.

mmcv 2.1.0 (what mmdet 3.3.0 needs) has no wheel for current PyTorch, and
building it compiles every op mmcv has (over half an hour on 2 cores).
mmcv-lite 2.1.0 is the same Python package without its compiled module
``mmcv._ext``; each ``mmcv.ops`` module looks its functions up there when
imported (``ext_loader.load_ext('_ext', [names])``), and mmdet imports
``mmcv.ops``, so with mmcv-lite alone ``import mmdet.models`` fails.

What this module provides, under mmcv's names and argument conventions
(mmcv's Python wrappers preallocate the outputs and the functions write into
them), and nothing else:

- ``roi_align_forward`` / ``roi_align_backward``: mmcv's RoIAlign
  (``aligned``, ``sampling_ratio``, ``pool_mode``). The average mode, the
  one mmdet's RoI extractors and mask targets use, runs torchvision's
  kernels (the same Detectron algorithm as mmcv's, CPU and CUDA); the max
  mode, which torchvision lacks, is written here in PyTorch, sample for
  sample as mmcv's kernels.
- ``nms``: torchvision's kernel, given mmcv's ordering of equal scores; for
  ``offset=1`` (box width ``x2 - x1 + 1``), which torchvision lacks, mmcv's
  loop in PyTorch. ``mmcv.ops.batched_nms`` and ``mmcv.ops.nms`` are Python
  on top of it.
- ``carafe_forward`` / ``carafe_backward`` and the ``carafe_naive_*`` pair:
  our op (:func:`carafe.carafe`), on CPU as well as CUDA.
- ``get_compiler_version`` / ``get_compiling_cuda_version``: say that no
  mmcv ops were compiled.

Every other function that an ``mmcv.ops`` module looks up when imported
exists too (so ``import mmcv.ops`` succeeds, as mmdet needs), and raises
NotImplementedError naming the op and the full-mmcv route when called.

:func:`install` makes it ``mmcv._ext`` only where mmcv has none of its own:
it appends an import finder for that one name to ``sys.meta_path``, and the
finders there run in order, so Python's own finder, which finds a compiled
``mmcv._ext`` wherever one is installed, answers first. With full mmcv
nothing is replaced. ``carafe.mmdet`` (the configs' ``custom_imports``) and
the research toolkit's launcher call it; call it yourself before importing mmdet
otherwise. Importing this module changes nothing; tests call its functions
directly.
"""

import importlib.abc
import importlib.machinery
import struct
import sys
import types

import torch
from torch import Tensor

#: The functions provided (not counting the unsupported ones).
PROVIDED = (
    "roi_align_forward",
    "roi_align_backward",
    "nms",
    "carafe_forward",
    "carafe_backward",
    "carafe_naive_forward",
    "carafe_naive_backward",
    "get_compiler_version",
    "get_compiling_cuda_version",
)

#: What every ``mmcv.ops`` module of mmcv 2.1.0 looks up in ``mmcv._ext``
#: when imported (module -> names), read from its load_ext calls; those not
#: in PROVIDED raise NotImplementedError when called.
MMCV_OPS_LOOKUPS = {
    "active_rotated_filter": ("active_rotated_filter_forward", "active_rotated_filter_backward"),
    "assign_score_withk": ("assign_score_withk_forward", "assign_score_withk_backward"),
    "ball_query": ("ball_query_forward", "stack_ball_query_forward"),
    "bbox": ("bbox_overlaps",),
    "bezier_align": ("bezier_align_forward", "bezier_align_backward"),
    "bias_act": ("bias_act",),
    "border_align": ("border_align_forward", "border_align_backward"),
    "box_iou_quadri": ("box_iou_quadri",),
    "box_iou_rotated": ("box_iou_rotated",),
    "carafe": (
        "carafe_naive_forward",
        "carafe_naive_backward",
        "carafe_forward",
        "carafe_backward",
    ),
    "chamfer_distance": ("chamfer_distance_forward", "chamfer_distance_backward"),
    "contour_expand": ("contour_expand",),
    "convex_iou": ("convex_iou", "convex_giou"),
    "correlation": ("correlation_forward", "correlation_backward"),
    "deform_conv": (
        "deform_conv_forward",
        "deform_conv_backward_input",
        "deform_conv_backward_parameters",
    ),
    "deform_roi_pool": ("deform_roi_pool_forward", "deform_roi_pool_backward"),
    "diff_iou_rotated": ("diff_iou_rotated_sort_vertices_forward",),
    "filtered_lrelu": ("filtered_lrelu", "filtered_lrelu_act_"),
    "focal_loss": (
        "sigmoid_focal_loss_forward",
        "sigmoid_focal_loss_backward",
        "softmax_focal_loss_forward",
        "softmax_focal_loss_backward",
    ),
    "furthest_point_sample": (
        "furthest_point_sampling_forward",
        "furthest_point_sampling_with_dist_forward",
    ),
    "fused_bias_leakyrelu": ("fused_bias_leakyrelu",),
    "gather_points": ("gather_points_forward", "gather_points_backward"),
    "group_points": (
        "group_points_forward",
        "group_points_backward",
        "stack_group_points_forward",
        "stack_group_points_backward",
    ),
    "info": ("get_compiler_version", "get_compiling_cuda_version"),
    "iou3d": (
        "iou3d_boxes_overlap_bev_forward",
        "iou3d_nms3d_forward",
        "iou3d_nms3d_normal_forward",
    ),
    "knn": ("knn_forward",),
    "masked_conv": ("masked_im2col_forward", "masked_col2im_forward"),
    "min_area_polygons": ("min_area_polygons",),
    "modulated_deform_conv": ("modulated_deform_conv_forward", "modulated_deform_conv_backward"),
    "multi_scale_deform_attn": ("ms_deform_attn_backward", "ms_deform_attn_forward"),
    "nms": ("nms", "softnms", "nms_match", "nms_rotated", "nms_quadri"),
    "pixel_group": ("pixel_group",),
    "points_in_boxes": (
        "points_in_boxes_part_forward",
        "points_in_boxes_cpu_forward",
        "points_in_boxes_all_forward",
    ),
    "points_in_polygons": ("points_in_polygons_forward",),
    "prroi_pool": ("prroi_pool_forward", "prroi_pool_backward", "prroi_pool_coor_backward"),
    "psa_mask": ("psamask_forward", "psamask_backward"),
    "riroi_align_rotated": ("riroi_align_rotated_forward", "riroi_align_rotated_backward"),
    "roi_align": ("roi_align_forward", "roi_align_backward"),
    "roi_align_rotated": ("roi_align_rotated_forward", "roi_align_rotated_backward"),
    "roi_pool": ("roi_pool_forward", "roi_pool_backward"),
    "roiaware_pool3d": ("roiaware_pool3d_forward", "roiaware_pool3d_backward"),
    "roipoint_pool3d": ("roipoint_pool3d_forward",),
    "rotated_feature_align": ("rotated_feature_align_forward", "rotated_feature_align_backward"),
    "scatter_points": ("dynamic_point_to_voxel_forward", "dynamic_point_to_voxel_backward"),
    "sparse_ops": (
        "get_indice_pairs_2d_forward",
        "get_indice_pairs_3d_forward",
        "get_indice_pairs_4d_forward",
        "get_indice_pairs_2d_backward",
        "get_indice_pairs_3d_backward",
        "indice_conv_forward",
        "indice_conv_backward",
        "fused_indice_conv_forward",
        "indice_maxpool_forward",
        "indice_maxpool_backward",
    ),
    "sync_bn": (
        "sync_bn_forward_mean",
        "sync_bn_forward_var",
        "sync_bn_forward_output",
        "sync_bn_backward_param",
        "sync_bn_backward_data",
    ),
    "three_interpolate": ("three_interpolate_forward", "three_interpolate_backward"),
    "three_nn": ("three_nn_forward",),
    "tin_shift": ("tin_shift_forward", "tin_shift_backward"),
    "upfirdn2d": ("upfirdn2d",),
    "voxelize": ("dynamic_voxelize_forward", "hard_voxelize_forward"),
}

#: How to get every mmcv op (the message of each unsupported function).
FULL_MMCV_ROUTE = (
    "install full mmcv 2.1.0 with its compiled ops instead of mmcv-lite: "
    "`MMCV=full make setup`, or `MMCV=full bash scripts/install_mmcv.sh python` "
    "(a prebuilt wheel when pip finds one, else a build from source)"
)


def _unsupported(name: str, module: str):
    def op(*args, **kwargs):
        raise NotImplementedError(
            f"mmcv._ext.{name} (mmcv.ops.{module}) is not available: this environment has "
            "mmcv-lite, whose compiled ops carafe.mmcv_ext provides only for RoIAlign, nms "
            f"and CARAFE; {FULL_MMCV_ROUTE}"
        )

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"Not provided on the mmcv-lite route (mmcv.ops.{module}); raises."
    return op


def unsupported_names() -> tuple:
    """The mmcv._ext functions that exist here only to raise."""
    names = {n for names in MMCV_OPS_LOOKUPS.values() for n in names}
    return tuple(sorted(names - set(PROVIDED)))


def _f32(value: float) -> float:
    """value rounded to float32: mmcv's kernels take their float arguments
    as C++ float, torchvision's as double."""
    return struct.unpack("f", struct.pack("f", float(value)))[0]


def _torchvision_ops():
    try:
        import torchvision  # noqa: F401  (registers torch.ops.torchvision)
    except ImportError as e:
        raise ImportError(
            "carafe.mmcv_ext needs torchvision for RoIAlign and nms "
            "(pip install torchvision matching your torch)"
        ) from e
    return torch.ops.torchvision


# --- nms --------------------------------------------------------------------


def _check_nms_args(boxes: Tensor, scores: Tensor, offset: int) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"nms: boxes must be (N, 4), got shape {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"nms: scores must be (N,) = ({boxes.shape[0]},) for boxes (N, 4), "
            f"got shape {tuple(scores.shape)}"
        )
    if scores.device != boxes.device:
        raise ValueError(
            f"nms: scores must be on boxes' device {boxes.device}, got {scores.device}"
        )
    if offset not in (0, 1):
        raise ValueError(f"nms: offset must be 0 or 1, got {offset!r}")


def _greedy_nms(sorted_boxes: Tensor, iou_threshold: float, offset: int) -> Tensor:
    """mmcv's CPU nms loop, in its float arithmetic: positions (into
    sorted_boxes, (N, 4) by decreasing score) of the boxes kept. One step
    per kept box, each over the boxes after it."""
    x1, y1, x2, y2 = sorted_boxes.unbind(1)
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    alive = torch.ones(len(sorted_boxes), dtype=torch.bool, device=sorted_boxes.device)
    keep = []
    i = 0
    while True:
        keep.append(i)
        rest = slice(i + 1, None)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + offset).clamp_min(0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + offset).clamp_min(0)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        alive[rest] &= ~(ovr > iou_threshold)  # a NaN overlap suppresses nothing, as in mmcv
        later = alive[rest].nonzero()
        if later.numel() == 0:
            return torch.tensor(keep, dtype=torch.long, device=sorted_boxes.device)
        i += 1 + int(later[0])


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int) -> Tensor:
    """mmcv's ``nms``: indices (M,) into boxes (N, 4) (rows x1, y1, x2, y2)
    of the boxes kept, by decreasing score (scores: (N,)). A box is dropped
    when its IoU with a kept box of higher score exceeds iou_threshold (as a
    float32); box width and height are ``x2 - x1 + offset``, offset 0 or 1."""
    _check_nms_args(boxes, scores, offset)
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    # mmcv's order: its kernels sort the scores with this same call (not a
    # stable sort), while torchvision's stable sort can order equal scores
    # differently. So the boxes go to torchvision in mmcv's order, scored by
    # their rank.
    order = scores.sort(0, descending=True)[1]
    sorted_boxes = boxes.index_select(0, order)
    if sorted_boxes.dtype not in (torch.float32, torch.float64):
        sorted_boxes = sorted_boxes.float()
    threshold = _f32(iou_threshold)
    if offset:
        # torchvision has no offset, and shifting x2, y2 by one rounds
        # differently from mmcv's x2 - x1 + 1, which flips boxes whose IoU
        # is within a rounding of the threshold: mmcv's own loop instead
        # (slower; mmdet 3.3.0 never sets offset, so runs the path below).
        return order[_greedy_nms(sorted_boxes, threshold, offset)]
    # torchvision's CPU kernel computes the IoU as mmcv's does (for offset 0)
    n = sorted_boxes.shape[0]
    ranks = torch.arange(n, 0, -1, dtype=sorted_boxes.dtype, device=sorted_boxes.device)
    keep = _torchvision_ops().nms(sorted_boxes, ranks, threshold)
    return order[keep]


# --- RoIAlign ---------------------------------------------------------------

#: mmcv's starting value of a max-pooled bin (an empty bin keeps it): its
#: CPU kernel starts from -10000, its CUDA kernel from -FLT_MAX.
_MAX_START = {"cpu": -10000.0, "cuda": -3.4028234663852886e38}


def _roi_boxes(rois: Tensor, spatial_scale: float, aligned: bool):
    """Start, size of each RoI in feature-map pixels, in the input's dtype,
    computed in the order mmcv's kernels compute them."""
    scale = torch.tensor(_f32(spatial_scale), dtype=rois.dtype, device=rois.device)
    offset = 0.5 if aligned else 0.0
    start_w = rois[:, 1] * scale - offset
    start_h = rois[:, 2] * scale - offset
    width = (rois[:, 3] * scale - offset) - start_w
    height = (rois[:, 4] * scale - offset) - start_h
    if not aligned:  # mmcv's legacy mode: at least one pixel
        width = width.clamp_min(1.0)
        height = height.clamp_min(1.0)
    return start_w, start_h, width, height


def _check_roi_align_args(input: Tensor, rois: Tensor, pool_mode: int) -> None:
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must be (N, C, H, W), got shape {tuple(input.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            "roi_align: rois must be (K, 5), rows (batch index, x1, y1, x2, y2), "
            f"got shape {tuple(rois.shape)}"
        )
    if rois.dtype != input.dtype or rois.device != input.device:
        raise ValueError(
            f"roi_align: rois must have input's dtype {input.dtype} and device "
            f"{input.device}, got {rois.dtype} on {rois.device}"
        )
    if pool_mode not in (0, 1):
        raise ValueError(f"roi_align: pool_mode must be 0 (max) or 1 (avg), got {pool_mode!r}")


def _check_roi_sizes(rois: Tensor, spatial_scale: float, aligned: bool) -> None:
    # mmcv's CPU kernel refuses negative sizes in aligned mode (its CUDA
    # kernel cannot check; there such a RoI gets no samples).
    if aligned and rois.device.type == "cpu" and rois.numel():
        _, _, width, height = _roi_boxes(rois, spatial_scale, aligned)
        if bool(((width < 0) | (height < 0)).any()):
            raise RuntimeError("ROIs in ROIAlign cannot have non-negative size!")


def _axis(coords: Tensor, size: int):
    """mmcv's bilinear sampling along one axis: (inside, low, high, weight of
    low, weight of high); coordinates in [-1, 0] clamp to 0, those past the
    last pixel to it."""
    inside = ~((coords < -1.0) | (coords > size))
    c = coords.clamp_min(0.0)
    low = c.to(torch.long)  # c >= 0: truncation is floor
    edge = low >= size - 1
    low = torch.where(edge, torch.full_like(low, size - 1), low)
    high = torch.where(edge, low, low + 1)
    c = torch.where(edge, low.to(c.dtype), c)
    frac = c - low.to(c.dtype)
    return inside, low, high, 1.0 - frac, frac


def _sample_coords(start: Tensor, size: Tensor, pooled: int, grid: int) -> Tensor:
    """(K, pooled, grid) sample coordinates: start + p * bin + (i + .5) * bin / grid."""
    bin_size = size / pooled
    p = torch.arange(pooled, dtype=start.dtype, device=start.device)
    i = torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5
    base = start[:, None] + p[None, :] * bin_size[:, None]
    return base[:, :, None] + (i[None, None, :] * bin_size[:, None, None]) / grid


def _roi_align_max(input, rois, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned):
    """mmcv's max-mode RoIAlign: per bin, the largest bilinear sample and
    where it was taken (the first, in mmcv's sampling order, among equals)."""
    K = rois.shape[0]
    N, C, H, W = input.shape
    start = _MAX_START.get(input.device.type, _MAX_START["cuda"])
    out = input.new_full((K, C, pooled_h, pooled_w), start)
    arg_y = input.new_full((K, C, pooled_h, pooled_w), -1.0)
    arg_x = input.new_full((K, C, pooled_h, pooled_w), -1.0)
    if K == 0:
        return out, arg_y, arg_x
    start_w, start_h, width, height = _roi_boxes(rois, spatial_scale, aligned)
    if sampling_ratio > 0:
        grid_h = torch.full((K,), sampling_ratio, dtype=torch.long, device=rois.device)
        grid_w = grid_h
    else:  # mmcv: ceilf(size / pooled), the quotient rounded to float first
        grid_h = torch.ceil((height / pooled_h).float()).to(torch.long)
        grid_w = torch.ceil((width / pooled_w).float()).to(torch.long)
    batch = rois[:, 0].to(torch.long)
    # RoIs with equal sample grids are computed together, in chunks that
    # keep the gathered samples to a few million values.
    pairs = torch.stack([grid_h, grid_w], 1)
    for gh, gw in torch.unique(pairs, dim=0).tolist():
        if gh <= 0 or gw <= 0:
            continue  # an empty bin keeps mmcv's starting value
        idx = ((grid_h == gh) & (grid_w == gw)).nonzero().flatten()
        per_roi = C * pooled_h * pooled_w * gh * gw
        step = max(1, (1 << 22) // per_roi)
        for chunk in idx.split(step):
            ys = _sample_coords(start_h[chunk], height[chunk], pooled_h, gh)  # (k, PH, gh)
            xs = _sample_coords(start_w[chunk], width[chunk], pooled_w, gw)  # (k, PW, gw)
            in_y, y_lo, y_hi, hy, ly = _axis(ys, H)
            in_x, x_lo, x_hi, hx, lx = _axis(xs, W)
            # to (k, PH, gh, PW, gw); as mmcv's CPU kernel, a sample outside
            # the map reads pixel 0 with weight 0
            ex_y = lambda t: t[:, :, :, None, None]
            ex_x = lambda t: t[:, None, None, :, :]
            inside = ex_y(in_y) & ex_x(in_x)
            zero = torch.zeros((), dtype=input.dtype, device=input.device)
            b = batch[chunk][:, None, None, None, None]

            def tap(yi, xi, wy, wx):
                w = torch.where(inside, ex_y(wy) * ex_x(wx), zero)
                yy = torch.where(inside, ex_y(yi), 0)
                xx = torch.where(inside, ex_x(xi), 0)
                return w[..., None] * input[b, :, yy, xx]  # (k, PH, gh, PW, gw, C)

            val = tap(y_lo, x_lo, hy, hx) + tap(y_lo, x_hi, hy, lx)
            val = val + tap(y_hi, x_lo, ly, hx)
            val = val + tap(y_hi, x_hi, ly, lx)
            k = chunk.numel()
            val = val.permute(0, 5, 1, 3, 2, 4).reshape(k, C, pooled_h, pooled_w, gh * gw)
            best, where = val.max(-1)  # the first among equals, as mmcv's strict >
            take = best > start
            iy, ix = where // gw, where % gw
            y_at = ys[:, None, :, None, :].expand(k, C, pooled_h, pooled_w, gh)
            x_at = xs[:, None, None, :, :].expand(k, C, pooled_h, pooled_w, gw)
            y_at = y_at.gather(-1, iy[..., None]).squeeze(-1)
            x_at = x_at.gather(-1, ix[..., None]).squeeze(-1)
            out[chunk] = torch.where(take, best, out[chunk])
            arg_y[chunk] = torch.where(take, y_at, arg_y[chunk])
            arg_x[chunk] = torch.where(take, x_at, arg_x[chunk])
    return out, arg_y, arg_x


def _roi_align_max_backward(grad_output, rois, arg_y, arg_x, grad_input):
    """Each bin's gradient to the four pixels of its maximum's sample."""
    N, C, H, W = grad_input.shape
    K, _, PH, PW = grad_output.shape
    if K == 0:
        return
    # mmcv skips a bin whose argmax is -1 (none, or a sample exactly there)
    sampled = arg_y != -1.0
    in_y, y_lo, y_hi, hy, ly = _axis(arg_y, H)
    in_x, x_lo, x_hi, hx, lx = _axis(arg_x, W)
    use = sampled & in_y & in_x
    b = rois[:, 0].to(torch.long)[:, None, None, None]
    c = torch.arange(C, device=rois.device)[None, :, None, None]
    plane = (b * C + c) * H
    g = grad_output[use][:, None]
    taps = ((y_lo, x_lo), (y_lo, x_hi), (y_hi, x_lo), (y_hi, x_hi))
    index = torch.stack([((plane + yi) * W + xi)[use] for yi, xi in taps], 1)
    weight = torch.stack([w[use] for w in (hy * hx, hy * lx, ly * hx, ly * lx)], 1)
    # bin by bin, its four taps in turn: mmcv's order of additions (on CPU,
    # where index_add_ adds in index order, the sums are mmcv's to the bit)
    grad_input.view(-1).index_add_(0, index.flatten(), (g * weight).flatten())


def roi_align_forward(
    input: Tensor,
    rois: Tensor,
    output: Tensor,
    argmax_y: Tensor,
    argmax_x: Tensor,
    aligned_height: int,
    aligned_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    pool_mode: int,
    aligned: bool,
) -> None:
    """mmcv's RoIAlign forward. input: (N, C, H, W); rois: (K, 5), rows
    (batch index, x1, y1, x2, y2) in image coordinates, scaled by
    spatial_scale to input's; output: (K, C, aligned_height, aligned_width),
    filled. pool_mode 0 (max) also fills argmax_y / argmax_x (shaped as
    output) with where each bin's maximum was sampled; 1 (average) leaves
    them (mmcv passes empty tensors)."""
    _check_roi_align_args(input, rois, pool_mode)
    _check_roi_sizes(rois, spatial_scale, aligned)
    if pool_mode == 1:
        result = _torchvision_ops().roi_align(
            input,
            rois,
            _f32(spatial_scale),
            aligned_height,
            aligned_width,
            sampling_ratio,
            aligned,
        )
        output.copy_(result)
    else:
        result, ay, ax = _roi_align_max(
            input, rois, aligned_height, aligned_width, spatial_scale, sampling_ratio, aligned
        )
        output.copy_(result)
        argmax_y.copy_(ay)
        argmax_x.copy_(ax)


def roi_align_backward(
    grad_output: Tensor,
    rois: Tensor,
    argmax_y: Tensor,
    argmax_x: Tensor,
    grad_input: Tensor,
    aligned_height: int,
    aligned_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    pool_mode: int,
    aligned: bool,
) -> None:
    """mmcv's RoIAlign backward: adds the gradient of grad_output (K, C,
    aligned_height, aligned_width) into grad_input (N, C, H, W); rois,
    argmax_y / argmax_x and the rest as roi_align_forward got them."""
    _check_roi_align_args(grad_input, rois, pool_mode)
    _check_roi_sizes(rois, spatial_scale, aligned)
    if pool_mode == 1:
        N, C, H, W = grad_input.shape
        grad = _torchvision_ops()._roi_align_backward(
            grad_output,
            rois,
            _f32(spatial_scale),
            aligned_height,
            aligned_width,
            N,
            C,
            H,
            W,
            sampling_ratio,
            aligned,
        )
        grad_input.add_(grad)
    else:
        _roi_align_max_backward(grad_output, rois, argmax_y, argmax_x, grad_input)


# --- CARAFE -----------------------------------------------------------------


def _carafe(features, masks, kernel_size, group_size, scale_factor):
    from .ops import carafe

    return carafe(features, masks, kernel_size, group_size, scale_factor)


def _carafe_grads(top_grad, features, masks, kernel_size, group_size, scale_factor):
    from . import ops  # noqa: F401  (loads the kernels)

    return torch.ops.carafe.carafe_backward(
        top_grad.contiguous(), features, masks, kernel_size, group_size, scale_factor
    )


def carafe_forward(
    features, masks, rfeatures, routput, rmasks, output, kernel_size, group_size, scale_factor
) -> None:
    """mmcv's CARAFE forward by our op. mmcv's CUDA kernel leaves a
    channels-last copy of the features in rfeatures, which its backward
    receives instead of the features; here rfeatures gets the features as
    they are, for our backward. routput and rmasks are not used."""
    output.copy_(_carafe(features, masks, kernel_size, group_size, scale_factor))
    rfeatures.copy_(features)


def carafe_backward(
    top_grad,
    rfeatures,
    masks,
    rtop_grad,
    rbottom_grad_hs,
    rbottom_grad,
    rmask_grad,
    bottom_grad,
    mask_grad,
    kernel_size,
    group_size,
    scale_factor,
) -> None:
    """mmcv's CARAFE backward by our op (rfeatures: the features, see
    carafe_forward); the r* buffers are not used."""
    g_features, g_masks = _carafe_grads(
        top_grad, rfeatures, masks, kernel_size, group_size, scale_factor
    )
    bottom_grad.copy_(g_features)
    mask_grad.copy_(g_masks)


def carafe_naive_forward(features, masks, output, kernel_size, group_size, scale_factor) -> None:
    """mmcv's CARAFENaive forward (the same function as CARAFE) by our op."""
    output.copy_(_carafe(features, masks, kernel_size, group_size, scale_factor))


def carafe_naive_backward(
    top_grad, features, masks, bottom_grad, mask_grad, kernel_size, group_size, scale_factor
) -> None:
    """mmcv's CARAFENaive backward by our op."""
    g_features, g_masks = _carafe_grads(
        top_grad, features, masks, kernel_size, group_size, scale_factor
    )
    bottom_grad.copy_(g_features)
    mask_grad.copy_(g_masks)


# --- what mmcv's environment report asks ------------------------------------


def get_compiler_version() -> str:
    return "none: mmcv-lite, with RoIAlign, nms and CARAFE from carafe.mmcv_ext"


def get_compiling_cuda_version() -> str:
    return "not available"


# --- making it mmcv._ext ----------------------------------------------------

#: Set on the module this provides as ``mmcv._ext``.
MARKER = "__carafe_mmcv_ext__"


def build_module(name: str = "mmcv._ext") -> types.ModuleType:
    """A module with every function mmcv.ops looks up: PROVIDED from here,
    the others raising."""
    module = types.ModuleType(name, __doc__)
    for ops_module, names in MMCV_OPS_LOOKUPS.items():
        for fn in names:
            if fn in PROVIDED:
                setattr(module, fn, globals()[fn])
            elif not hasattr(module, fn):
                setattr(module, fn, _unsupported(fn, ops_module))
    setattr(module, MARKER, True)
    return module


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return build_module(spec.name)

    def exec_module(self, module):
        pass


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``mmcv._ext`` only; placed after Python's own finders, it is
    asked only when no compiled mmcv._ext was found."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mmcv._ext":
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), origin=__name__)


def install() -> None:
    """Provide ``mmcv._ext`` where mmcv has none of its own (mmcv-lite);
    with full mmcv, or with no mmcv, nothing changes. Idempotent. Must run
    before the first ``import mmcv.ops`` (which ``import mmdet.models`` and
    ``import mmdet.datasets`` do) to take effect."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


def active() -> bool:
    """Whether the ``mmcv._ext`` in use is this one (after ``import mmcv.ops``)."""
    ext = sys.modules.get("mmcv._ext")
    return bool(getattr(ext, MARKER, False))


def route() -> str:
    """Which mmcv ops this process runs: 'mmcv' (compiled), 'carafe.mmcv_ext'
    (mmcv-lite with this module) or 'none' (mmcv.ops not imported yet, or
    no mmcv)."""
    ext = sys.modules.get("mmcv._ext")
    if ext is None:
        return "none"
    return "carafe.mmcv_ext" if getattr(ext, MARKER, False) else "mmcv"
