"""HTTP routes of the metadata REST API: objects, fields and webhooks.

Twenty answers these in two envelope formats chosen per workspace (new: bare DTO or
`{data:[...]}`; legacy: `{data:{fields:[...]}}` ...); the format is a config switch here.
The deprecated `/rest/webhooks` alias answers with `Deprecation` and `Link` headers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from truth_forge.sandbox import metadata_ops
from truth_forge.sandbox.errors import ApiError, bad_request
from truth_forge.sandbox.metadata import field_dto, object_dto
from truth_forge.sandbox.routes_core import read_json
from truth_forge.sandbox.runtime import SandboxRuntime

METADATA_MAX_LIMIT = 1000
# legacy-metadata-route-deprecation.interceptor: 2026-08-10 as an HTTP-date-ish epoch marker.
DEPRECATION_HEADERS = {
    "Deprecation": "@1786320000",
    "Link": '</rest/metadata/webhooks>; rel="successor-version"',
}


def paginate(items: list[dict[str, Any]], request: Request) -> tuple[list[dict[str, Any]],
                                                                     dict[str, Any]]:
    """Metadata lists: limit (default/max 1000) and id cursors; both cursors -> 400."""
    raw_limit = request.query_params.get("limit")
    try:
        limit = METADATA_MAX_LIMIT if raw_limit is None else int(raw_limit)
    except ValueError:
        raise bad_request(f"limit '{raw_limit}' is invalid. Should be an integer") from None
    if limit < 0:
        raise bad_request(f"limit '{raw_limit}' is invalid. Should be an integer")
    limit = min(limit, METADATA_MAX_LIMIT)
    after = request.query_params.get("starting_after")
    before = request.query_params.get("ending_before")
    if after and before:
        raise bad_request("Cannot use both starting_after and ending_before")
    items = sorted(items, key=lambda i: i["id"])
    if after:
        window = [i for i in items if i["id"] > after]
        page, has_next, has_prev = window[:limit], len(window) > limit, len(window) < len(items)
    elif before:
        window = [i for i in items if i["id"] < before]
        page = window[-limit:] if limit else []
        has_next, has_prev = len(window) < len(items), len(window) > limit
    else:
        page, has_next, has_prev = items[:limit], len(items) > limit, False
    info = {"hasNextPage": has_next, "hasPreviousPage": has_prev,
            "startCursor": page[0]["id"] if page else None,
            "endCursor": page[-1]["id"] if page else None}
    return page, info


class MetadataRoutes:
    def __init__(self, runtime: SandboxRuntime) -> None:
        self.rt = runtime

    @property
    def legacy(self) -> bool:
        return self.rt.config.metadata_format == "legacy"

    def _wrap_one(self, key: str, dto: dict[str, Any], status: int = 200) -> JSONResponse:
        return JSONResponse({"data": {key: dto}} if self.legacy else dto, status_code=status)

    def _wrap_list(self, key: str, items: list[dict[str, Any]],
                   request: Request) -> JSONResponse:
        page, info = paginate(items, request)
        data: Any = {key: page} if self.legacy else page
        return JSONResponse({"data": data, "pageInfo": info, "totalCount": len(items)})

    def _objects(self) -> dict[str, Any]:
        return self.rt.workspace.objects

    # -- objects ------------------------------------------------------------------------------

    async def objects(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            body = await read_json(request)
            obj = metadata_ops.create_object(self.rt.workspace, body)
            with self.rt.workspace.lock:
                dto = object_dto(obj, self._objects())
            return self._wrap_one("createOneObject", dto, status=201)
        with self.rt.workspace.lock:
            items = [object_dto(o, self._objects()) for o in self._objects().values()]
        return self._wrap_list("objects", items, request)

    async def one_object(self, request: Request) -> JSONResponse:
        with self.rt.workspace.lock:
            obj = self.rt.workspace.object_by_id(request.path_params["id"])
            if obj is None:
                raise ApiError(404, "NotFoundException", "Object metadata not found")
            dto = object_dto(obj, self._objects())
        return self._wrap_one("object", dto)

    # -- fields -------------------------------------------------------------------------------

    async def fields(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            body = await read_json(request)
            f = metadata_ops.create_field(self.rt.workspace, body)
            with self.rt.workspace.lock:
                dto = field_dto(f, self._objects())
            return self._wrap_one("createOneField", dto, status=201)
        with self.rt.workspace.lock:
            items = [field_dto(f, self._objects())
                     for o in self._objects().values() for f in o.fields.values()]
        return self._wrap_list("fields", items, request)

    async def one_field(self, request: Request) -> JSONResponse:
        field_id = request.path_params["id"]
        ws = self.rt.workspace
        if request.method == "GET":
            with ws.lock:
                _, f = metadata_ops.find_field(ws, field_id)
                return self._wrap_one("field", field_dto(f, self._objects()))
        if request.method in ("PATCH", "PUT"):
            body = await read_json(request)
            f = metadata_ops.update_field(ws, field_id, body)
            with ws.lock:
                return self._wrap_one("updateOneField", field_dto(f, self._objects()))
        f = metadata_ops.delete_field(ws, field_id)
        with ws.lock:
            return self._wrap_one("deleteOneField", field_dto(f, self._objects()))

    # -- webhooks -----------------------------------------------------------------------------

    def _webhook_route(self, handler: Callable[[Request], Any], deprecated: bool) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            response: JSONResponse = await handler(request)
            if deprecated:
                response.headers.update(DEPRECATION_HEADERS)
            return response
        return endpoint

    async def webhooks(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            return JSONResponse(self.rt.webhooks.create(await read_json(request)),
                                status_code=201)
        hooks = self.rt.webhooks.list()
        if self.legacy:
            return JSONResponse(hooks)  # the older controller answered with a bare array
        page, info = paginate(hooks, request)
        return JSONResponse({"data": page, "pageInfo": info, "totalCount": len(hooks)})

    async def one_webhook(self, request: Request) -> JSONResponse:
        hook_id = request.path_params["id"]
        if request.method == "GET":
            return JSONResponse(self.rt.webhooks.get(hook_id))
        if request.method in ("PATCH", "PUT"):
            return JSONResponse(self.rt.webhooks.update(hook_id, await read_json(request)))
        return JSONResponse(self.rt.webhooks.delete(hook_id))

    def routes(self) -> list[Route]:
        routes = [
            Route("/rest/metadata/objects", self.objects, methods=["GET", "POST"]),
            Route("/rest/metadata/objects/{id}", self.one_object, methods=["GET"]),
            Route("/rest/metadata/fields", self.fields, methods=["GET", "POST"]),
            Route("/rest/metadata/fields/{id}", self.one_field,
                  methods=["GET", "PATCH", "PUT", "DELETE"]),
        ]
        for prefix, deprecated in (("/rest/metadata/webhooks", False), ("/rest/webhooks", True)):
            routes.append(Route(prefix, self._webhook_route(self.webhooks, deprecated),
                                methods=["GET", "POST"]))
            routes.append(Route(prefix + "/{id}", self._webhook_route(self.one_webhook, deprecated),
                                methods=["GET", "PATCH", "PUT", "DELETE"]))
        return routes
