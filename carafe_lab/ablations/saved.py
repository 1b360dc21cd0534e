"""A study's trained models, kept in their run folders for the evaluations
that reuse them (the mechanism study's phase-mean swap): what the tasks that
declare ``saves_models`` write and read back. Kept locally, not committed."""

from pathlib import Path

import torch

#: The file a trained model is saved to in its run folder.
MODEL_FILE = "model.pt"


def save_model(work_dir, model, upsampler, options, setting, overrides):
    """Save model's state_dict and what it was built and trained with
    (upsampler name, its options, the task's setting and the settings
    overridden) to work_dir/MODEL_FILE; returns work_dir as a string (the
    result's "work_dir")."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "upsampler": upsampler,
            "options": dict(options),
            "setting": setting,
            "overrides": dict(overrides),
            "state_dict": model.state_dict(),
        },
        work_dir / MODEL_FILE,
    )
    return str(work_dir)


def load_saved(work_dir, device="cpu"):
    """What :func:`save_model` wrote in work_dir: {"upsampler", "options",
    "setting", "overrides", "state_dict"}; a clear error when it is not there."""
    path = Path(work_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"work_dir: no trained model at {path} (models are kept "
            "locally, not committed; retrain the variant)"
        )
    return torch.load(path, map_location=device, weights_only=True)


def build_saved(work_dir, build, device="cpu"):
    """The model saved in work_dir, rebuilt by build(saved) (a callable that
    returns the untrained module from the saved description), its weights
    loaded, in eval mode; and the description without the weights."""
    saved = load_saved(work_dir, device)
    model = build(saved).to(device)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), {k: v for k, v in saved.items() if k != "state_dict"}
