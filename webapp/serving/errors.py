"""What the tabs need from serving without importing torch: the base model's reserved name, the load error, and the
generation request (`training.request.Request`, re-exported) they hand to `models.generate_many`."""

from training.request import Request

__all__ = ["BASE", "Request", "VersionLoadError"]

BASE = "base"


class VersionLoadError(RuntimeError):
    """A version could not be loaded; the previously active version keeps serving."""
