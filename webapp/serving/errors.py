"""What the tabs need from serving without importing torch: the base model's reserved name and the load error."""

BASE = "base"


class VersionLoadError(RuntimeError):
    """A version could not be loaded; the previously active version keeps serving."""
