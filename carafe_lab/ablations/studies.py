"""The studies: which upsamplers (and options) each one compares.

Each variant is (label, upsampler name in carafe_lab.upsamplers, options);
an option ``downsampler`` (a name in carafe_lab.downsamplers) puts that
downsampler in the task's stride-2 steps (the others are the upsampler's).
A variant listed in EVALUATED is not trained: it is another variant's trained
model evaluated differently (per seed). A variant listed in TRAINING trains
with those settings of the task changed. A study listed in STUDY_TASKS runs
only on those tasks."""

STUDIES = {
    # The paper's upsampler comparison, plus DySample (ICCV 2023) and the
    # successors that also read the encoder feature, FADE (ECCV 2022) and
    # SAPA-B (NeurIPS 2022); those two are left out on tasks without one (sr).
    "upsamplers": [
        ("nearest", "nearest", {}),
        ("bilinear", "bilinear", {}),
        ("deconv", "deconv", {}),
        ("pixel_shuffle", "pixel_shuffle", {}),
        ("spatial_attention", "spatial_attention", {}),
        ("gum", "gum", {}),
        ("carafe", "carafe", {}),
        ("dysample", "dysample", {}),
        ("fade", "fade", {}),
        ("sapa", "sapa", {}),
    ],
    # Channel compressor width C_m.
    "compressed_channels": [
        (f"C_m={c}", "carafe", {"compressed_channels": c}) for c in (16, 32, 64, 128, 256)
    ],
    # Content encoder kernel k_encoder x reassembly kernel k_up.
    "kernel_sizes": [
        (f"k_enc={e},k_up={u}", "carafe", {"encoder_kernel": e, "up_kernel": u})
        for e in (1, 3, 5)
        for u in (3, 5, 7)
    ],
    # Kernel normaliser.
    "normalizer": [
        (n, "carafe", {"normalizer": n}) for n in ("sigmoid", "sigmoid_normalized", "softmax")
    ],
}

STUDIES["mechanism"] = [
    ("nearest", "nearest", {}),
    ("carafe", "carafe", {}),
    # CARAFE's reassembly with learned per-phase kernels, no content encoder
    ("static_carafe", "static_carafe", {}),
    # the trained CARAFE with its kernels swapped for its own phase-mean kernels
    ("carafe_phase_mean", "carafe", {}),
    # nearest + convolutions with about CARAFE's parameter count
    ("nearest_conv", "nearest_conv", {}),
]
# The learning-rate factor of CARAFE's kernel prediction (schedule.KERNEL_LR_SCALE).
STUDIES["kernel_lr"] = [(f"kernel_lr_scale={x}", "carafe", {}) for x in (0.1, 0.3, 1.0)]

# Where CARAFE's kernels start (sr): the uniform kernel (a box blur the
# head must undo), nearest's centre tap or bilinear's weights; beside the two
# fixed interpolations they start from.
STUDIES["kernel_init"] = [
    ("nearest", "nearest", {}),
    ("bilinear", "bilinear", {}),
    ("carafe", "carafe", {}),
    ("carafe_init=nearest", "carafe", {"kernel_init": "nearest"}),
    ("carafe_init=bilinear", "carafe", {"kernel_init": "bilinear"}),
]

# The encoder's stride-2 steps (seg) or the backbone's (det), each replaced
# by a downsampler of carafe_lab.downsamplers followed by the step's own conv
# at stride 1; CARAFE++ (Wang et al., TPAMI 2021) against a strided conv and
# the pools. The upsampler is nearest in every arm, so the downsampler is the
# one content-aware part and the arms differ in it alone (CARAFE++'s unified
# setting, carafe in both directions, would confound the two).
STUDIES["downsamplers"] = [
    (name, "nearest", {"downsampler": name}) for name in ("conv", "maxpool", "avgpool", "carafe_pp")
]

#: study -> evaluated variant label -> (trained variant label, evaluation name)
#: (the task's ``evaluate`` implements the evaluation).
EVALUATED = {"mechanism": {"carafe_phase_mean": ("carafe", "phase_mean")}}

#: study -> variant label -> task settings the variant trains with.
TRAINING = {"kernel_lr": {f"kernel_lr_scale={x}": {"kernel_lr_scale": x} for x in (0.1, 0.3, 1.0)}}

#: study -> the tasks it runs on (studies not listed run on any task).
STUDY_TASKS = {
    "mechanism": ("seg", "det", "inpaint"),
    "kernel_lr": ("seg",),
    "kernel_init": ("sr", "inpaint"),
    "downsamplers": ("seg", "det"),
}


def evaluated(study, label):
    """(trained variant label, evaluation) when the variant is an evaluation
    of another variant's trained model, else None."""
    return EVALUATED.get(study, {}).get(label)


def training_overrides(study, label):
    """The task settings a variant trains with ({} for the task's own)."""
    return dict(TRAINING.get(study, {}).get(label, {}))


#: study -> the comparisons its table tests, (a, b, paired): a's first metric
#: minus b's over the seeds; paired when b evaluates a's own trained models.
#: Studies not listed compare every variant with the first (the baseline).
COMPARISONS = {
    "mechanism": [
        ("carafe", "static_carafe", False),  # content-predicted vs learned fixed kernels
        ("carafe", "carafe_phase_mean", True),  # the same models, content adaptation removed
        ("carafe", "nearest_conv", False),  # the mechanism vs as many parameters
        ("static_carafe", "nearest", False),  # what a learned fixed reassembly adds
        ("carafe", "nearest", False),
    ],
    "kernel_init": [
        ("carafe_init=nearest", "carafe", False),  # the start, same model otherwise
        ("carafe_init=bilinear", "carafe", False),
        ("carafe_init=nearest", "nearest", False),  # against what it starts as
        ("carafe_init=bilinear", "bilinear", False),
        ("carafe", "nearest", False),
    ],
    "downsamplers": [
        ("carafe_pp", "conv", False),  # content-aware vs the learned strided conv
        ("carafe_pp", "avgpool", False),  # vs a fixed average (carafe_pp starts as a 5x5 one)
        ("carafe_pp", "maxpool", False),
        ("maxpool", "conv", False),
        ("avgpool", "conv", False),
    ],
}


def comparisons(study, labels):
    """The (a, b, paired) comparisons of a study's table among labels."""
    if study in COMPARISONS:
        return [c for c in COMPARISONS[study] if c[0] in labels and c[1] in labels]
    return [(label, labels[0], False) for label in labels[1:]]
