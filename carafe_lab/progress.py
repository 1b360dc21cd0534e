"""Progress bars for the notebooks and the launcher's progress hook.

``tqdm.auto`` draws a widget in a Jupyter kernel and text elsewhere, but where
ipywidgets is missing it also warns (TqdmWarning, "IProgress not found") into
the cell before falling back to text. :func:`tqdm` makes the same choice
without the warning: the widget where ipywidgets can draw it (the
``notebooks`` extra installs it), else the text bar.
"""


def bar_class():
    """The tqdm class to use: tqdm.auto's when ipywidgets is importable, else
    the text bar (tqdm.std)."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        from tqdm.std import tqdm as text_bar

        return text_bar
    from tqdm.auto import tqdm as auto_bar

    return auto_bar


def tqdm(*args, **kwargs):
    """A progress bar (tqdm's arguments) of :func:`bar_class`."""
    return bar_class()(*args, **kwargs)
