"""Model versions: register, name, list, activate (one active at a time, audited), archive/reject."""

from __future__ import annotations

import json
import re
import sqlite3

from feedback_db.models import ModelVersion, Snapshot
from feedback_db.store.base import StoreBase, check, check_choice, now
from feedback_db.vocab import METHODS, TECHNIQUES, VERSION_STATUSES

VERSION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VN = re.compile(r"v(\d+)-")


class VersionsMixin(StoreBase):
    """Model versions."""

    # model versions ---

    def register_version(
        self,
        name: str,
        parent: str | None,
        method: str,
        technique: str,
        path: str,
        base_model: str,
        config: dict,
        data_snapshot: Snapshot | dict | None,
        metrics: dict,
        status: str = "candidate",
    ) -> ModelVersion:
        """`data_snapshot`: the Snapshot the version was trained on, or free-form provenance (SDK adapters)."""
        check(VERSION_NAME.fullmatch(name) is not None and name != "base", f"invalid version name {name!r}")
        check_choice("method", method, METHODS)
        check_choice("technique", technique, TECHNIQUES)
        check_choice("status", status, VERSION_STATUSES)
        row = {"name": name, "parent": parent, "method": method, "technique": technique, "path": str(path)}
        row |= {"base_model": base_model, "config": json.dumps(config), "data_snapshot": json.dumps(
            data_snapshot.to_dict() if isinstance(data_snapshot, Snapshot) else data_snapshot)}
        row |= {"metrics": json.dumps(metrics), "status": "candidate", "created": now()}
        with self._db.write():
            try:
                self._insert("model_versions", row)
            except sqlite3.IntegrityError:
                raise ValueError(f"version {name!r} already exists") from None
            if status == "active":
                self.set_active(name)
            elif status != "candidate":
                self.set_version_status(name, status)
        return self.get_version(name)

    def next_version_name(self, method: str) -> str:
        numbers = [int(m.group(1)) for (n,) in self._query("SELECT name FROM model_versions") if (m := _VN.match(n))]
        return f"v{max(numbers, default=0) + 1}-{method}"

    def get_version(self, name: str) -> ModelVersion | None:
        return self._one(_version, "SELECT * FROM model_versions WHERE name = ?", (name,))

    def list_versions(self) -> list[ModelVersion]:
        return [_version(r) for r in self._query("SELECT * FROM model_versions ORDER BY id")]

    def update_version_metrics(self, name: str, metrics: dict) -> None:
        """Merge `metrics` into the version's metrics."""
        with self._db.write():
            version = self._require_version(name)
            merged = json.dumps({**version.metrics, **metrics})
            self._update("UPDATE model_versions SET metrics = ? WHERE name = ?", (merged, name))

    def set_active(self, name: str | None, username: str = "system") -> None:
        """Serve `name` (None = the base model); the previously active version becomes archived."""
        with self._db.write():
            if name is not None:
                version = self._require_version(name)
                check(version.method != "reward", f"{name!r} is a reward model and cannot be served")
            previous = self.active_version()
            self._update("UPDATE model_versions SET status = 'archived' WHERE status = 'active'", ())
            if name is not None:
                self._update(
                    "UPDATE model_versions SET status = 'active', activated = ? WHERE name = ?", (now(), name)
                )
            detail = {"version": name or "base", "previous": previous.name if previous else "base"}
            self.audit(username, "activate_version", detail)

    def active_version(self) -> ModelVersion | None:
        return self._one(_version, "SELECT * FROM model_versions WHERE status = 'active'")

    def previously_active(self) -> str | None:
        """The version that served before the last activation ("base" for the base model); None before any."""
        rows = self._query("SELECT detail FROM audit WHERE action = 'activate_version' ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0]["detail"])["previous"] if rows else None

    def archive_version(self, name: str) -> None:
        self.set_version_status(name, "archived")

    def set_version_status(self, name: str, status: str) -> None:
        check_choice("status", status, VERSION_STATUSES)
        check(status != "active", "use set_active() to activate a version")
        if self._update("UPDATE model_versions SET status = ? WHERE name = ?", (status, name)) == 0:
            raise KeyError(f"no version {name!r}")

    def _require_version(self, name: str) -> ModelVersion:
        version = self.get_version(name)
        if version is None:
            raise KeyError(f"no version {name!r}")
        return version


def _version(row: sqlite3.Row) -> ModelVersion:
    decoded = {k: json.loads(row[k]) for k in ("config", "data_snapshot", "metrics")}
    return ModelVersion(**{**dict(row), **decoded})
