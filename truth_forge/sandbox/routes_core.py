"""HTTP routes of the core REST API (`/rest/{objectNamePlural}` ...) and their envelopes.

Only translation happens here: path and query in, `RecordService` call, Twenty's response
envelope out (`data.createPerson`, `data.people` + `pageInfo` + `totalCount`, ...).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from truth_forge.sandbox.actors import Credential
from truth_forge.sandbox.errors import ApiError, bad_request
from truth_forge.sandbox.metadata import ObjectDef
from truth_forge.sandbox.query import FIELDS_CAPPED_HEADER, cap_fields, default_field_names, parse_depth, parse_fields
from truth_forge.sandbox.runtime import SandboxRuntime
from truth_forge.sandbox.values import normalize_input


def _cap(name: str) -> str:
    return name[:1].upper() + name[1:]


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise bad_request("Request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"Invalid JSON body: {exc}") from None


def _flag(request: Request, name: str) -> bool:
    # Only the literal string "true" counts (parse-upsert / parse-soft-delete utils).
    return request.query_params.get(name) == "true"


def _params(request: Request) -> dict[str, str]:
    return dict(request.query_params)


def _caller(request: Request) -> Credential | None:
    """Who sent the request (set by the outer ASGI layer after checking the token)."""
    return request.scope.get("state", {}).get("credential")


class CoreRoutes:
    def __init__(self, runtime: SandboxRuntime) -> None:
        self.rt = runtime

    def _obj(self, request: Request) -> ObjectDef:
        with self.rt.workspace.lock:
            return self.rt.workspace.object_by_plural(request.path_params["plural"])

    @staticmethod
    def _check_render_params(request: Request, obj: ObjectDef) -> None:
        """Reject a bad `depth`/`fields` before anything is written."""
        parse_depth(request.query_params.get("depth"))
        parse_fields(request.query_params.get("fields"), obj)

    def _render_all(self, request: Request, obj: ObjectDef,
                    records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        depth = parse_depth(request.query_params.get("depth"))
        fields = parse_fields(request.query_params.get("fields"), obj)
        with self.rt.workspace.lock:
            return [r if set(r) == {"id"} else self.rt.records.render(obj, r, depth, fields)
                    for r in records]

    def _capped(self, request: Request, obj: ObjectDef,
                records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """A read without `fields` on an object with too many fields gets the default set only,
        and the header saying so (newer servers; the profile's `fields_cap`)."""
        if request.query_params.get("fields"):
            return records, {}
        with self.rt.workspace.lock:
            kept = default_field_names(obj, self.rt.config.behaviour.fields_cap)
        if kept is None:
            return records, {}
        return [cap_fields(r, obj, kept) for r in records], {FIELDS_CAPPED_HEADER: "true"}

    # -- collection -------------------------------------------------------------------------

    async def collection(self, request: Request) -> JSONResponse:
        obj = self._obj(request)
        self._check_render_params(request, obj)
        method = request.method
        if method == "GET":
            result = self.rt.records.find_many(obj, _params(request))
            records, headers = self._capped(request, obj, result["records"])
            return JSONResponse({"data": {obj.name_plural: records},
                                 "pageInfo": result["pageInfo"],
                                 "totalCount": result["totalCount"]}, headers=headers)
        if method == "POST":
            body = await read_json(request)
            if not isinstance(body, dict):
                raise bad_request("Request body should be a JSON object. "
                                  f"Use /rest/batch/{obj.name_plural} to create many records")
            request.state.batch_size = 1
            created = self.rt.records.create(obj, [body], upsert=_flag(request, "upsert"),
                                             who=_caller(request))
            rendered = self._render_all(request, obj, created)[0]
            return JSONResponse({"data": {f"create{_cap(obj.name_singular)}": rendered}},
                                status_code=201)
        if method in ("PATCH", "PUT"):
            body = await read_json(request)
            updated = self.rt.records.update_many(obj, request.query_params.get("filter"), body,
                                                  who=_caller(request))
            return JSONResponse({"data": {f"update{_cap(obj.name_plural)}":
                                          self._render_all(request, obj, updated)}})
        # DELETE
        deleted = self.rt.records.delete_many(obj, request.query_params.get("filter"),
                                              soft=_flag(request, "soft_delete"))
        return JSONResponse({"data": {f"delete{_cap(obj.name_plural)}":
                                      self._render_all(request, obj, deleted)}})

    async def batch(self, request: Request) -> JSONResponse:
        obj = self._obj(request)
        self._check_render_params(request, obj)
        body = await read_json(request)
        if not isinstance(body, list):
            raise bad_request("Request body should be an array of records")
        request.state.batch_size = len(body)
        limit = self.rt.config.batch_max
        if len(body) > limit:
            # Twenty checks every record's fields (processArgs) before it counts them (run): a
            # record naming an unknown field is refused for that, not for the batch's size.
            with self.rt.workspace.lock:
                for item in body:
                    normalize_input(obj, item, self.rt.config.behaviour)
            raise bad_request(f"Maximum number of records to upsert is {limit}.")
        created = self.rt.records.create(obj, body, upsert=_flag(request, "upsert"),
                                         who=_caller(request))
        return JSONResponse({"data": {f"create{_cap(obj.name_plural)}":
                                      self._render_all(request, obj, created)}},
                            status_code=201)

    # -- one record ---------------------------------------------------------------------------

    async def one(self, request: Request) -> JSONResponse:
        obj = self._obj(request)
        self._check_render_params(request, obj)
        rid = request.path_params["id"]
        singular = _cap(obj.name_singular)
        if request.method == "GET":
            record = self.rt.records.find_one(obj, rid, _params(request))
            capped, headers = self._capped(request, obj, [record])
            return JSONResponse({"data": {obj.name_singular: capped[0]}}, headers=headers)
        if request.method in ("PATCH", "PUT"):
            body = await read_json(request)
            updated = self.rt.records.update_one(obj, rid, body, who=_caller(request))
            return JSONResponse({"data": {f"update{singular}":
                                          self._render_all(request, obj, [updated])[0]}})
        soft = _flag(request, "soft_delete")
        deleted = self.rt.records.delete_one(obj, rid, soft=soft)
        rendered = self._render_all(request, obj, [deleted])[0]
        return JSONResponse({"data": {f"delete{singular}": rendered}})

    async def restore_one(self, request: Request) -> JSONResponse:
        obj = self._obj(request)
        self._check_render_params(request, obj)
        restored = self.rt.records.restore_one(obj, request.path_params["id"])
        return JSONResponse({"data": {f"restore{_cap(obj.name_singular)}":
                                      self._render_all(request, obj, [restored])[0]}})

    async def restore_many(self, request: Request) -> JSONResponse:
        obj = self._obj(request)
        self._check_render_params(request, obj)
        restored = self.rt.records.restore_many(obj, request.query_params.get("filter"))
        return JSONResponse({"data": {f"restore{_cap(obj.name_plural)}":
                                      self._render_all(request, obj, restored)}})

    async def merge(self, request: Request) -> JSONResponse:
        """`{ids, conflictPriorityIndex, dryRun?}`: duplicates merged into one (records.merge_many)."""
        obj = self._obj(request)
        self._check_render_params(request, obj)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request("Request body should be a JSON object")
        merged = self.rt.records.merge_many(obj, body.get("ids"), body.get("conflictPriorityIndex"),
                                            dry_run=body.get("dryRun") is True)
        return JSONResponse({"data": {f"merge{_cap(obj.name_plural)}": self._render_all(request, obj, [merged])[0]}})

    async def not_supported(self, request: Request) -> JSONResponse:
        raise ApiError(501, "NotImplementedException",
                       f"{request.method} {request.url.path} is not implemented by the sandbox")

    def routes(self) -> list[Route]:
        return [
            Route("/rest/batch/{plural}", self.batch, methods=["POST"]),
            # The restore path moved (around March 2026); both forms are accepted.
            Route("/rest/restore/{plural}/{id}", self.restore_one, methods=["PATCH"]),
            Route("/rest/restore/{plural}", self.restore_many, methods=["PATCH"]),
            Route("/rest/{plural}/restore", self.restore_many, methods=["PATCH"]),
            Route("/rest/{plural}/duplicates", self.not_supported, methods=["POST"]),
            Route("/rest/{plural}/merge", self.merge, methods=["PATCH"]),
            Route("/rest/{plural}/groupBy", self.not_supported, methods=["GET"]),
            Route("/rest/{plural}/{id}/restore", self.restore_one, methods=["PATCH"]),
            Route("/rest/{plural}/{id}", self.one, methods=["GET", "PATCH", "PUT", "DELETE"]),
            Route("/rest/{plural}", self.collection,
                  methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
        ]
