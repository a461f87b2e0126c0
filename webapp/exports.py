"""A version out of the app (Admin › Versions): `training.export` writes it under data/exports/ (the client never
picks a server path), the export is audited, and an adapter (a few MB) is zipped for download."""

import shutil
from datetime import UTC, datetime
from pathlib import Path

from feedback_db.store import FeedbackStore


def export_version(store: FeedbackStore, data_dir: Path, name: str, merged: bool,
                   username: str) -> tuple[Path, Path | None]:
    """Export `name` (merged into the base model, or as it is); returns the folder and, for an adapter, its zip."""
    from training.export import export_version as export  # torch: loaded by the first export, not with the tabs

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = export(store, name, Path(data_dir) / "exports" / f"{name}-{'merged' if merged else 'export'}-{stamp}",
                    merged=merged)
    store.audit(username, "export", {"version": name, "merged": merged, "path": str(folder)})
    if (folder / "adapter_config.json").is_file():
        return folder, Path(shutil.make_archive(str(folder), "zip", root_dir=folder))
    return folder, None
