"""The studies: which upsamplers (and options) each one compares.

Each variant is (label, upsampler name in carafe_lab.upsamplers, options)."""

STUDIES = {
    # The paper's upsampler comparison, plus DySample (ICCV 2023).
    "upsamplers": [
        ("nearest", "nearest", {}),
        ("bilinear", "bilinear", {}),
        ("deconv", "deconv", {}),
        ("pixel_shuffle", "pixel_shuffle", {}),
        ("spatial_attention", "spatial_attention", {}),
        ("gum", "gum", {}),
        ("carafe", "carafe", {}),
        ("dysample", "dysample", {}),
    ],
    # Channel compressor width C_m.
    "compressed_channels": [
        (f"C_m={c}", "carafe", {"compressed_channels": c}) for c in (16, 32, 64, 128, 256)
    ],
    # Content encoder kernel k_encoder x reassembly kernel k_up.
    "kernel_sizes": [
        (f"k_enc={e},k_up={u}", "carafe", {"encoder_kernel": e, "up_kernel": u})
        for e in (1, 3, 5) for u in (3, 5, 7)
    ],
    # Kernel normaliser.
    "normalizer": [
        (n, "carafe", {"normalizer": n}) for n in ("sigmoid", "sigmoid_normalized", "softmax")
    ],
}
