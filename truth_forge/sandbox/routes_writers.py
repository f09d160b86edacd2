"""`/_sandbox/unstamped/*`: write as one of Twenty's writers that leave `updatedBy` alone.

Twenty stamps `updatedBy` only in the query runner's create and update hooks. Older workflow
"update record" steps wrote through the repository, past those hooks, so the record keeps its last
editor's stamp (docs/twenty-facts.md). Tests use this route to make such an edit: the values land,
`updatedAt` moves and an `updated` event goes out, as for any update, but `updatedBy` stays.
Restores (`PATCH /rest/{plural}/{id}/restore`) and merges (`PATCH /rest/{plural}/merge`) are
unstamped on the ordinary routes already, as in Twenty.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from truth_forge.sandbox.routes_core import read_json
from truth_forge.sandbox.runtime import SandboxRuntime


class UnstampedWriterRoutes:
    def __init__(self, runtime: SandboxRuntime) -> None:
        self.rt = runtime

    async def update(self, request: Request) -> JSONResponse:
        with self.rt.workspace.lock:
            obj = self.rt.workspace.object_by_plural(request.path_params["plural"])
        body = await read_json(request)
        updated = self.rt.records.update_unstamped(obj, request.path_params["id"], body)
        with self.rt.workspace.lock:
            rendered = self.rt.records.render(obj, updated)
        return JSONResponse({"data": rendered})

    def routes(self) -> list[Route]:
        return [Route("/_sandbox/unstamped/{plural}/{id}", self.update, methods=["PATCH"])]
