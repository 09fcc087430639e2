"""siamtool: Siamese single-object tracking, from LaSOT shards to ONNX."""

__version__ = "0.1.0"


def load_tracker(checkpoint=None, **kwargs):  # noqa: ANN001, ANN201 - the signature lives in siamtool.api
    """Open a tracker with the OpenCV contract (`init`, `update`): see `siamtool.api.load_tracker`.

    Defined here, and importing the API only when called, so that ``import siamtool`` stays cheap (no torch,
    no OpenCV) for code that only reads ``siamtool.__version__``.
    """
    from siamtool.api import load_tracker as _load_tracker

    return _load_tracker(checkpoint, **kwargs)


__all__ = ["__version__", "load_tracker"]
