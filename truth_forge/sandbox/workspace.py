"""One Twenty workspace's state: metadata, record tables, persistence, change events.

Everything mutable in the sandbox hangs off a `Workspace` and is guarded by its lock, so the
request handlers (uvicorn's thread) and the test thread calling `reset()` never see half a
change. Record and metadata operations live in their own modules and work on this object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from truth_forge.sandbox.clock import MonotonicClock
from truth_forge.sandbox.config import SandboxConfig
from truth_forge.sandbox.errors import bad_request
from truth_forge.sandbox.metadata import FieldDef, ObjectDef, build_standard_objects
from truth_forge.sandbox.persistence import SqlitePersistence
from truth_forge.sandbox.store import RecordTable


@dataclass
class RecordEvent:
    """A database event as Twenty's webhooks see it (`person.updated` ...)."""

    action: str  # created | updated | deleted | destroyed | restored
    object: ObjectDef
    record: dict[str, Any]
    event_date: str
    updated_fields: list[str] | None = None


EventSink = Callable[[list[RecordEvent]], None]


class Workspace:
    def __init__(self, config: SandboxConfig, on_events: EventSink | None = None) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.clock = MonotonicClock(config.clock_offset_ms)
        self.on_events = on_events
        self.persistence = SqlitePersistence(config.db_path) if config.db_path else None
        self.objects: dict[str, ObjectDef] = {}
        self.tables: dict[str, RecordTable] = {}
        with self.lock:
            self._load()

    # ----------------------------------------------------------------------------------------
    # lifecycle

    def _fresh_metadata(self) -> None:
        now = self.clock.now_iso()
        self.objects = {o.name_singular: o for o in
                        build_standard_objects(self.config.workspace_id, now)}
        self.tables = {name: RecordTable(o) for name, o in self.objects.items()}

    def _load(self) -> None:
        stored = self.persistence.load_document("objects") if self.persistence else None
        if stored is None:
            self._fresh_metadata()
            self.save_metadata()
            return
        self.objects = {}
        for state in stored:
            fields = {name: FieldDef.from_state(f) for name, f in state.pop("fields").items()}
            obj = ObjectDef(**state, fields=fields)
            self.objects[obj.name_singular] = obj
        self.tables = {name: RecordTable(o) for name, o in self.objects.items()}
        assert self.persistence is not None
        for obj_name, rows in self.persistence.load_records().items():
            table = self.tables.get(obj_name)
            if table is None:
                raise RuntimeError(f"persisted records for unknown object {obj_name!r}")
            for rec in rows.values():
                table.put(rec)
                self.clock.observe(rec.get("updatedAt"))
                self.clock.observe(rec.get("deletedAt"))

    def reset(self) -> None:
        """Back to a fresh workspace: standard metadata only, no records."""
        with self.lock:
            if self.persistence:
                self.persistence.clear()
            self._fresh_metadata()
            self.save_metadata()

    def close(self) -> None:
        if self.persistence:
            self.persistence.close()

    # ----------------------------------------------------------------------------------------
    # metadata lookups

    def object_by_plural(self, plural: str) -> ObjectDef:
        for obj in self.objects.values():
            if obj.name_plural == plural:
                return obj
        if plural in self.objects:
            raise bad_request(f"object '{plural}' not found. "
                              f"Did you mean '{self.objects[plural].name_plural}'?")
        example = next(iter(self.objects.values())).name_plural if self.objects else "companies"
        raise bad_request(f"object '{plural}' not found. eg: {example}")

    def object_by_id(self, object_id: str) -> ObjectDef | None:
        return next((o for o in self.objects.values() if o.id == object_id), None)

    def table(self, obj: ObjectDef) -> RecordTable:
        return self.tables[obj.name_singular]

    # ----------------------------------------------------------------------------------------
    # persistence and events

    def save_metadata(self) -> None:
        if self.persistence:
            self.persistence.save_document(
                "objects", [asdict(o) for o in self.objects.values()])

    def persist(self, obj_name: str, puts: list[dict[str, Any]], deletes: list[str]) -> None:
        if self.persistence and (puts or deletes):
            self.persistence.write([(obj_name, r) for r in puts],
                                   [(obj_name, rid) for rid in deletes])

    def persist_document(self, name: str, data: Any) -> None:
        if self.persistence:
            self.persistence.save_document(name, data)

    def load_document(self, name: str) -> Any:
        return self.persistence.load_document(name) if self.persistence else None

    def emit(self, events: list[RecordEvent]) -> None:
        if events and self.on_events is not None:
            self.on_events(events)
