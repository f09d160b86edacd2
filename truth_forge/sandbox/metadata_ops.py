"""Changes to the data model: create, update and delete fields (and custom objects).

A field change must reach every record at once (a new field appears as a top-level key, null by
default; a removed SELECT option empties the values that used it), so these operations take the
workspace lock and rewrite the affected rows together with the metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from truth_forge.sandbox.errors import ApiError, bad_request
from truth_forge.sandbox.field_rules import (
    CREATABLE_TYPES,
    FieldErrors,
    check_default,
    check_label,
    check_name,
    check_options,
    lodash_camel_case,
)
from truth_forge.sandbox.metadata import (
    COMPOSITE_TYPES,
    FIELD_TYPES,
    FieldDef,
    ObjectDef,
    add_system_fields,
    composite_default,
)
from truth_forge.sandbox.store import RecordTable, unique_key
from truth_forge.sandbox.values import is_uuid
from truth_forge.sandbox.workspace import Workspace

_UPDATABLE = frozenset({"label", "description", "icon", "isActive", "isNullable", "defaultValue",
                        "options", "name", "isUnique", "settings", "isLabelSyncedWithName"})
_STANDARD_UPDATABLE = frozenset({"label", "description", "icon", "isActive"})


def field_not_found(field_id: str) -> ApiError:
    return ApiError(404, "NotFoundException", f"Field metadata {field_id} not found")


def _mutation_not_allowed(message: str) -> ApiError:
    # FIELD_MUTATION_NOT_ALLOWED maps to 403 (field-metadata-exception-code-to-http-status).
    return ApiError(403, "FIELD_MUTATION_NOT_ALLOWED", message)


def find_field(ws: Workspace, field_id: str) -> tuple[ObjectDef, FieldDef]:
    for obj in ws.objects.values():
        f = obj.field_by_id(field_id)
        if f is not None:
            return obj, f
    raise field_not_found(field_id)


def _field_record_default(f: FieldDef) -> Any:
    if f.is_composite and f.default_value is None:
        return {sub: None for sub in COMPOSITE_TYPES[f.type]}
    return composite_default(f.type, f.default_value)


def create_field(ws: Workspace, body: Any) -> FieldDef:
    if not isinstance(body, dict):
        raise bad_request("Request body should be a JSON object")
    object_id, type_ = body.get("objectMetadataId"), body.get("type")
    if not is_uuid(object_id):
        raise bad_request("objectMetadataId must be a UUID")
    if type_ not in FIELD_TYPES:
        raise bad_request(f"type must be one of the following values: {', '.join(sorted(FIELD_TYPES))}")
    with ws.lock:
        obj = ws.object_by_id(str(object_id))
        if obj is None:
            raise ApiError(400, "OBJECT_METADATA_NOT_FOUND", "Object metadata does not exist")
        name = body.get("name")
        errors = FieldErrors("create", name)
        if type_ not in CREATABLE_TYPES:
            errors.add("INVALID_FIELD_INPUT",
                       f"Field type {type_} cannot be created in the sandbox", type_)
        check_name(errors, name, obj)
        check_label(errors, body.get("label"))
        options = check_options(errors, type_, body.get("options"))
        is_unique = bool(body.get("isUnique", False))
        check_default(errors, type_, body.get("defaultValue"), options, is_unique)
        errors.raise_if_any()
        name = str(name)  # checked above
        now = ws.clock.now_iso()
        f = FieldDef(
            id=str(body.get("id") or uuid.uuid4()), object_id=obj.id, name=name, type=type_,
            label=body["label"], created_at=now, updated_at=now,
            description=body.get("description"), icon=body.get("icon"), is_custom=True,
            is_active=bool(body.get("isActive", True)),
            is_nullable=bool(body.get("isNullable", True)), is_unique=is_unique,
            default_value=body.get("defaultValue"), options=options,
            settings=body.get("settings"),
            is_label_synced_with_name=bool(body.get("isLabelSyncedWithName", False)),
        )
        obj.fields[name] = f
        default = _field_record_default(f)
        _rewrite_records(ws, obj, lambda rec: {**rec, name: default})
        return f


def update_field(ws: Workspace, field_id: str, body: Any) -> FieldDef:
    if not isinstance(body, dict):
        raise bad_request("Request body should be a JSON object")
    with ws.lock:
        obj, f = find_field(ws, field_id)
        unknown = set(body) - _UPDATABLE - {"id"}
        if "type" in unknown and body.get("type") == f.type:
            unknown.discard("type")
        if unknown:
            raise bad_request(f"Cannot update {', '.join(sorted(unknown))} of a field")
        if not f.is_custom and set(body) - _STANDARD_UPDATABLE - {"id"}:
            raise _mutation_not_allowed(
                f"Only label, description, icon and isActive of standard field {f.name} can "
                "be updated")
        errors = FieldErrors("update", f.name)
        new_name = body.get("name", f.name)
        if new_name != f.name:
            check_name(errors, new_name, obj, ignore=f.name)
        if "label" in body:
            check_label(errors, body["label"])
        options = f.options
        if "options" in body:
            options = check_options(errors, f.type, body["options"])
        is_unique = bool(body.get("isUnique", f.is_unique))
        default = body.get("defaultValue", f.default_value)
        if "defaultValue" in body or "options" in body or "isUnique" in body:
            check_default(errors, f.type, default, options, is_unique)
        errors.raise_if_any()
        table = ws.table(obj)
        if is_unique and not f.is_unique:
            _check_no_duplicates(table, f)
        rows = _rewrite_rows(table, f, new_name, options)
        if new_name != f.name:
            obj.fields = {(new_name if k == f.name else k): v for k, v in obj.fields.items()}
        f.name = new_name
        f.label = body.get("label", f.label)
        f.description = body.get("description", f.description)
        f.icon = body.get("icon", f.icon)
        f.is_active = bool(body.get("isActive", f.is_active))
        f.is_nullable = bool(body.get("isNullable", f.is_nullable))
        f.is_unique = is_unique
        f.default_value = default
        f.options = options
        f.settings = body.get("settings", f.settings)
        f.is_label_synced_with_name = bool(
            body.get("isLabelSyncedWithName", f.is_label_synced_with_name))
        f.updated_at = ws.clock.now_iso()
        table.rebuild_indexes()
        ws.persist(obj.name_singular, rows, [])
        ws.save_metadata()
        return f


def _check_no_duplicates(table: RecordTable, f: FieldDef) -> None:
    seen: set[Any] = set()
    for rec in table.values():
        if rec.get("deletedAt") is not None:
            continue
        key = unique_key(f, rec)
        if key is None:
            continue
        if key in seen:
            raise bad_request(f"Cannot make field {f.name} unique: existing records share the "
                              f"value {key!r}")
        seen.add(key)


def _rewrite_rows(table: RecordTable, f: FieldDef, new_name: str,
                  options: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Rename the key and drop values of removed options on every record of the object."""
    allowed = {o["value"] for o in options or []}
    changed: list[dict[str, Any]] = []
    for rec in list(table.values()):
        value = rec.get(f.name)
        if f.type == "SELECT" and value is not None and value not in allowed:
            value = None
        elif f.type == "MULTI_SELECT" and isinstance(value, list):
            value = [v for v in value if v in allowed]
        if new_name == f.name and value == rec.get(f.name):
            continue
        new = {k: v for k, v in rec.items() if k != f.name}
        new[new_name] = value
        table.put(new)
        changed.append(new)
    return changed


def delete_field(ws: Workspace, field_id: str) -> FieldDef:
    with ws.lock:
        obj, f = find_field(ws, field_id)
        if not f.is_custom:
            raise _mutation_not_allowed("Standard fields cannot be deleted")
        del obj.fields[f.name]
        _rewrite_records(ws, obj, lambda rec: {k: v for k, v in rec.items() if k != f.name})
        return f


def create_object(ws: Workspace, body: Any) -> ObjectDef:
    """A custom object with the system fields and a TEXT `name` (its label identifier)."""
    if not isinstance(body, dict):
        raise bad_request("Request body should be a JSON object")
    singular, plural = body.get("nameSingular"), body.get("namePlural")
    problems = []
    for value in (singular, plural):
        if not isinstance(value, str) or not value or lodash_camel_case(value) != value:
            problems.append(f'Name "{value}" should be in camelCase')
    for key in ("labelSingular", "labelPlural"):
        if not isinstance(body.get(key), str) or not body[key].strip():
            problems.append(f"{key} is required")
    if singular == plural:
        problems.append("The singular and plural names cannot be the same for an object")
    with ws.lock:
        taken = {n for o in ws.objects.values() for n in (o.name_singular, o.name_plural)}
        if singular in taken or plural in taken:
            problems.append(f'Name "{singular}" is not available')
        if problems:
            raise ApiError(400, "BadRequestException", problems)
        singular, plural = str(singular), str(plural)  # checked above
        now = ws.clock.now_iso()
        obj = ObjectDef(id=str(uuid.uuid4()), name_singular=singular, name_plural=plural,
                        label_singular=body["labelSingular"], label_plural=body["labelPlural"],
                        created_at=now, updated_at=now, description=body.get("description"),
                        icon=body.get("icon"), is_custom=True)
        add_system_fields(obj, ws.config.workspace_id + ":" + obj.id, now)
        obj.fields["name"] = FieldDef(
            id=str(uuid.uuid4()), object_id=obj.id, name="name", type="TEXT", label="Name",
            created_at=now, updated_at=now, default_value="'Untitled'", is_nullable=False)
        ws.objects[singular] = obj
        ws.tables[singular] = RecordTable(obj)
        ws.save_metadata()
        return obj


def _rewrite_records(ws: Workspace, obj: ObjectDef, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """A field was added or removed: rewrite every record of the object, then save the metadata."""
    table = ws.table(obj)
    rows = [change(rec) for rec in table.values()]
    for rec in rows:
        table.put(rec)
    table.rebuild_indexes()
    ws.persist(obj.name_singular, rows, [])
    ws.save_metadata()
