"""The neck of the ablation study's det task: mmdet's FPN_CARAFE layout with
every upsampler one of the zoo's (carafe_lab.upsamplers). Registered in
mmdet's MODELS as ``CARAFEZooFPN``::

    neck=dict(type='CARAFEZooFPN', ..., upsample_cfg=dict(type='zoo', name='dysample'))

(the launcher imports this module; from mmdet's own tools add
``carafe_lab.experiments.necks`` to the config's custom_imports)."""

from mmdet.registry import MODELS

from carafe.mmdet import UPSAMPLE_ALIASES, CARAFEOpFPN

from ..upsamplers import UPSAMPLERS, build_upsampler

#: The upsample ``type`` of this neck.
ZOO_TYPE = "zoo"
#: The upsample type the lab's configs of carafe 0.2 named our op with.
UPSAMPLE_ALIASES.add("carafe_lab")


@MODELS.register_module()
class CARAFEZooFPN(CARAFEOpFPN):
    """``CARAFEOpFPN`` whose upsamplers are ``build_upsampler(name,
    out_channels, 2, **options)`` for ``upsample_cfg=dict(type='zoo',
    name=name, **options)``; all other arguments as mmdet's ``FPN_CARAFE``."""

    def __init__(self, *args, upsample_cfg=None, **kwargs):
        options = dict(upsample_cfg or {})
        if options.pop("type", None) != ZOO_TYPE or "name" not in options:
            raise ValueError(
                f"upsample_cfg: expected dict(type='zoo', name=<one of "
                f"{sorted(UPSAMPLERS)}>, **options), got {upsample_cfg!r}"
            )
        name = options.pop("name")
        # mmdet builds the layout with nearest upsampling; each upsampler is replaced below.
        super().__init__(*args, upsample_cfg=dict(type="nearest"), **kwargs)
        for i in range(len(self.upsample_modules)):
            self.upsample_modules[i] = build_upsampler(name, self.out_channels, 2, **options)
        self.upsample = ZOO_TYPE
        # Their own initialisation (e.g. spatial attention and GUM start as
        # nearest), to restore after FPN_CARAFE's xavier init of every conv.
        self._zoo_init = [
            {k: v.clone() for k, v in m.state_dict().items()} for m in self.upsample_modules
        ]

    def init_weights(self):
        super().init_weights()
        for m, state in zip(self.upsample_modules, self._zoo_init):
            m.load_state_dict(state)
