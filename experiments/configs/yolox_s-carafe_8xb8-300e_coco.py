# YOLOX-s (mmdet's config) with CARAFE in its PAFPN, by the CARAFEConverted
# builder of carafe.mmdet: the neck's one nn.Upsample, called at two levels
# (256 and 128 channels), becomes one CARAFEPack per channel count, each with
# its own weights. Any detector converts the same way: wrap its model dict.
_base_ = "mmdet::yolox/yolox_s_8xb8-300e_coco.py"
custom_imports = dict(imports=["carafe.mmdet"], allow_failed_imports=False)
model = dict(
    _delete_=True,
    type="CARAFEConverted",
    model={{_base_.model}},
    # one zero batch in mode='tensor' finds each upsampling layer's channels
    example_input_shape=(2, 3, 256, 256),
    up_kernel=5,
    encoder_kernel=3,
    compressed_channels=64,
)
