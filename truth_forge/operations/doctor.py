"""`truth-forge doctor`: ask a live Twenty workspace how it really behaves before a sync relies on it.

Much of what truth-forge assumes about Twenty was read from Twenty's source, not seen on a running
server (docs/checking-a-real-workspace.md lists those assumptions). Doctor checks them against the
workspace truth-forge is configured for: reachability, the key, the data model, the batch limit,
not-found answers, rate-limit headers, soft-deleted visibility and whether another API key shares
our key's name (Twenty's `updatedBy` carries the name only). By default it writes nothing:
its one POST is a batch Twenty must refuse. With `probe_writes` it creates one probe person,
tries a few writes on that record only, and destroys it again, also when a step fails.

Every request goes through the project's own client (budget, retries, typed errors), and every
text it prints passes `redact` with the API key, which is never printed.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from truth_forge.core.config import Settings
from truth_forge.core.crm_schema import CrmSchema, verify_schema
from truth_forge.core.secrets import find_api_key, redact
from truth_forge.sync import own_writes
from truth_forge.twenty import shapes
from truth_forge.twenty.client import TwentyClient
from truth_forge.twenty.errors import (
    TwentyAuthError,
    TwentyError,
    TwentyNotFound,
    TwentyProtocolError,
    TwentyRateLimited,
    TwentyRecordRejected,
    TwentySchemaMismatch,
    TwentyTransientError,
)

Status = Literal["OK", "WARN", "FAIL", "INFO"]

PROBE_FIELD = "truthForgeDoctorProbe"  # a field no workspace has, so Twenty must refuse the batch
BATCH_PROBE_SIZE = 201  # one more than Twenty's QUERY_MAX_RECORDS (200)
DOCS_BATCH_LIMIT = 60
PROBE_FIRST_NAME = "truth-forge doctor"
BUDGET_SETTING = "TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE"
BATCH_SETTING = "TRUTH_FORGE_TWENTY_BATCH_SIZE"
DOCTOR_MAX_RETRIES = 2  # a dead URL should be reported in seconds, not after the sync's full backoff
_RATE_HEADERS = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@dataclass
class Finding:
    """One line of the report: what was checked, how it went, what was seen, what to do."""

    check: str
    status: Status
    found: str
    todo: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorReport:
    base_url: str
    key_source: str
    probe_writes: bool
    findings: list[Finding]
    requests: int
    could_not_run: bool = False

    @property
    def exit_code(self) -> int:
        if self.could_not_run:
            return 2
        return 1 if any(f.status == "FAIL" for f in self.findings) else 0

    def finding(self, check: str) -> Finding | None:
        return next((f for f in self.findings if f.check == check), None)

    def as_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "key_source": self.key_source, "probe_writes": self.probe_writes,
                "requests": self.requests, "exit_code": self.exit_code,
                "findings": [asdict(f) for f in self.findings]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=str)

    def render(self) -> str:
        mode = "probe writes on one probe record" if self.probe_writes else "read-only"
        width = max([len("CHECK")] + [len(f.check) for f in self.findings])
        lines = [f"truth-forge doctor: {self.base_url} ({mode}); key from {self.key_source}", "",
                 f"{'CHECK'.ljust(width)}  STATUS  FOUND"]
        for f in self.findings:
            lines.append(f"{f.check.ljust(width)}  {f.status.ljust(6)}  {f.found}")
            if f.todo:
                lines.append(f"{' ' * width}          -> {f.todo}")
        verdict = {0: "nothing failed", 1: "a check failed", 2: "could not run"}[self.exit_code]
        lines += ["", f"requests used: {self.requests}; {verdict} (exit {self.exit_code})"]
        return "\n".join(lines)


@dataclass
class Answer:
    """What doctor keeps of one HTTP answer: never a body, never a request header."""

    method: str
    path: str
    status: int
    headers: dict[str, str]


class ResponseLog(httpx.BaseTransport):
    """Passes each request on unchanged and notes the answer's status and the headers doctor reads.

    The inner `httpx.Client` keeps what a plain client does (proxies and certificates from the
    environment), so doctor reaches a workspace the same way the sync's client does.
    """

    def __init__(self) -> None:
        self._inner = httpx.Client(follow_redirects=False)
        self.answers: list[Answer] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.send(request, stream=True)
        kept = {h: response.headers[h] for h in ("location", *_RATE_HEADERS) if h in response.headers}
        self.answers.append(Answer(request.method, request.url.path, response.status_code, kept))
        return response

    def close(self) -> None:
        self._inner.close()


class CouldNotRun(Exception):
    """The workspace cannot be checked at all (no answer, not Twenty, key refused)."""


def display_url(url: str) -> str:
    """The URL without user info, query or fragment: what can be printed safely."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _payload(body: Any) -> Any:
    """The one value inside Twenty's `{"data": {"<operation>": ...}}` envelope, or None."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict) and len(data) == 1:
        return next(iter(data.values()))
    return None


def _said(exc: TwentyError) -> str:
    """HTTP status and Twenty's own words, without the request line (it can carry a filter)."""
    words = "; ".join(exc.messages) or exc.summary
    return f"{exc.status} {words}" if exc.status else words


class Doctor:
    """One doctor run: the client, what it has seen, and the findings so far."""

    def __init__(self, client: TwentyClient, log: ResponseLog, settings: Settings, schema: CrmSchema,
                 secret: str) -> None:
        self.client, self.log, self.settings, self.schema = client, log, settings, schema
        self.secret = secret
        self.findings: list[Finding] = []
        self.person_fields: set[str] | None = None
        self.metadata_ok = False
        self.probe_id: str | None = None
        self.deleted_updated_at: str | None = None

    def add(self, check: str, status: Status, found: str, todo: str = "", **details: Any) -> Finding:
        finding = Finding(check, status, redact(found, self.secret), redact(todo, self.secret), details)
        self.findings.append(finding)
        return finding

    def guarded(self, check: str, step: Callable[[], None]) -> None:
        """Run one check; a request that fails unexpectedly fails that check, and the others go on."""
        try:
            step()
        except TwentyError as exc:
            todo = ("the key's role in Twenty lacks a permission this check needs" if isinstance(exc, TwentyAuthError)
                    else "see the message; rerun with -v to log each request")
            self.add(check, "FAIL", f"request failed: {type(exc).__name__}: {_said(exc)}", todo,
                     status_code=exc.status)

    # -- 1, 2: reachability and auth ---------------------------------------------------------

    def check_reachable(self, key_source: str) -> None:
        url = display_url(self.settings.twenty_base_url)
        try:
            page = self.client.records.find_page("people", limit=1)
        except TwentyAuthError as exc:
            self.add("reachability", "OK", f"{url} answers like Twenty (its error body on {exc.status})")
            self.add("auth", "FAIL", f"key from {key_source} refused: {_said(exc)}",
                     "create a new API key in Twenty (Settings > APIs & Webhooks) and store it there")
            raise CouldNotRun from None
        except TwentyError as exc:
            self.add("reachability", "FAIL", *self._unreachable(url, exc), status_code=exc.status)
            raise CouldNotRun from None
        self.add("reachability", "OK", f"{url} answers like Twenty (200 with its {{data: {{people: [...]}}}} "
                 "envelope)", total_people=page.total_count)
        self.add("auth", "OK", f"key accepted; it came from {key_source}")

    def _unreachable(self, url: str, exc: TwentyError) -> tuple[str, str]:
        status = exc.status or 0
        if 300 <= status < 400:
            location = next((a.headers.get("location", "") for a in reversed(self.log.answers)
                             if a.status == status), "")
            target = urlsplit(location)
            where = f"host {target.hostname}" if target.hostname else "another path on the same host"
            scheme = f" ({urlsplit(url).scheme} -> {target.scheme})" if target.scheme and \
                target.scheme != urlsplit(url).scheme else ""
            return (f"{url} redirects ({status}) to {where}{scheme}",
                    "set TWENTY_BASE_URL to the address Twenty answers on directly (clients do not follow "
                    "redirects with the key)")
        if not status:  # never answered: refused, a name that does not resolve, TLS against plain HTTP
            return (f"no answer from {url}: {exc.summary}", "check TWENTY_BASE_URL, DNS, the network and that "
                    "the server runs")
        if isinstance(exc, TwentyTransientError):
            return f"{url} answered {_said(exc)}", "the server is failing: try again later or read its logs"
        if isinstance(exc, TwentyRateLimited) or status == 402:
            return (f"{url} answered {_said(exc)}", "the workspace's request budget or plan is spent: wait a "
                    "minute (or check the plan) and run again")
        if isinstance(exc, TwentyProtocolError):
            return (f"{url} answers {status or ''}, but not like Twenty: {exc.summary}",
                    "TWENTY_BASE_URL should be the server root (e.g. https://api.twenty.com), not a page "
                    "or a proxy")
        hint = "drop the trailing /rest from TWENTY_BASE_URL" if url.rstrip("/").endswith("/rest") else \
            "TWENTY_BASE_URL should be the server root, where /rest/people answers"
        return f"GET /rest/people on {url} answered {_said(exc)}", hint

    # -- 3: metadata ---------------------------------------------------------------------------

    def check_metadata(self) -> None:
        body = self.client.transport.request("GET", "/rest/metadata/objects", params={"limit": 1000})
        if isinstance(body, list):
            form, objects = "bare list (a very old server)", body
        elif isinstance(body, dict) and isinstance(body.get("data"), list):
            form, objects = "new format ({data: [...]})", body["data"]
        elif isinstance(_payload(body), list):
            form, objects = "legacy format ({data: {objects: [...]}})", _payload(body)
        else:
            self.add("metadata", "FAIL", "GET /rest/metadata/objects is not in a metadata format truth-forge reads",
                     "report this with the server's version")
            return
        by_name = {o.get("nameSingular"): o for o in objects if isinstance(o, dict)}
        missing = [name for name in ("person", "company") if name not in by_name]
        if "person" in by_name:
            self.person_fields = {f.get("name") for f in by_name["person"].get("fields") or []}
        if missing:
            self.add("metadata", "FAIL", f"{form}; no {' or '.join(missing)} object",
                     "point truth-forge at a Twenty workspace with the standard person and company objects")
            return
        self.add("metadata", "OK", f"{form}; person and company objects found", format=form)
        self.metadata_ok = True

    def check_fields(self) -> None:
        report = verify_schema(self.client, self.schema)
        missing = [f"{o}.{n}" for o in ("person", "company") for n in report[o]["missing"]]
        mismatched = [f"{o}.{m['field']} ({'; '.join(m['problems'])})" for o in ("person", "company")
                      for m in report[o]["mismatched"]]
        present = sum(len(report[o]["present"]) for o in ("person", "company"))
        found = f"{present} of {len(self.schema.fields)} custom fields present"
        if mismatched:
            self.add("custom fields", "FAIL", f"{found}; mismatched: {', '.join(mismatched)}"
                     + (f"; missing: {', '.join(missing)}" if missing else ""),
                     "setup never retypes a field: fix these in Twenty's data model settings, then run "
                     "`truth-forge setup`", missing=missing, mismatched=mismatched)
        elif missing:
            self.add("custom fields", "WARN", f"{found}; missing: {', '.join(missing)}",
                     "run `truth-forge setup` (it only adds what is missing)", missing=missing, mismatched=[])
        else:
            self.add("custom fields", "OK", found, missing=[], mismatched=[])

    # -- 4: batch limit ------------------------------------------------------------------------

    def check_batch_limit(self) -> None:
        configured = self.settings.twenty_batch_size
        if self.person_fields is not None and PROBE_FIELD in self.person_fields:
            self.add("batch limit", "WARN", f"not probed: person has a real field named {PROBE_FIELD}",
                     f"keep {BATCH_SETTING} at {DOCS_BATCH_LIMIT} or less")
            return
        try:
            body = self.client.transport.request("POST", "/rest/batch/people",
                                                 json_body=[{PROBE_FIELD: 1}] * BATCH_PROBE_SIZE, idempotent=False)
        except (TwentyRecordRejected, TwentySchemaMismatch) as exc:  # the unknown field or the count
            self._judge_batch_refusal(exc, configured)
            return
        self._undo_accepted_batch(body)

    def _judge_batch_refusal(self, exc: TwentyError, configured: int) -> None:
        limit = self.client.records.learn_max_batch(exc)
        if limit is None:
            field_first = any(PROBE_FIELD in m for m in exc.messages)
            why = ("it checked the fields before the count (Twenty's create-many runner does: the data "
                   "arguments are processed in execute() before run() counts the records)") if field_first \
                else "it refused the batch for another reason"
            self.add("batch limit", "INFO", f"limit not named, nothing written: {why}: {_said(exc)}",
                     f"keep {BATCH_SETTING} at {DOCS_BATCH_LIMIT} (documented) unless you have seen more "
                     "accepted; the sync lowers it by itself when Twenty names a limit",
                     limit=None, fields_checked_first=field_first)
        elif configured > limit:
            self.add("batch limit", "FAIL", f"Twenty takes at most {limit} records a batch; {BATCH_SETTING} is "
                     f"{configured}", f"set {BATCH_SETTING}={limit} or less", limit=limit)
        else:
            more = f"; {BATCH_SETTING}={configured} could go up to {limit}" if limit > configured else ""
            self.add("batch limit", "OK", f"Twenty names its limit: {limit} records a batch (it counted before "
                     f"checking fields; nothing written){more}", limit=limit)

    def _undo_accepted_batch(self, body: Any) -> None:
        """The server took records carrying an unknown field: destroy what it returned, and say so."""
        created = _payload(body)
        ids = [r["id"] for r in created if isinstance(r, dict) and r.get("id")] if isinstance(created, list) else []
        left = []
        for record_id in ids:
            try:
                self.client.records.delete("people", record_id, soft=False)
            except TwentyError:
                left.append(record_id)
        self.add("batch limit", "FAIL", f"the server ACCEPTED {BATCH_PROBE_SIZE} records with an unknown field "
                 f"({len(ids)} returned, {len(ids) - len(left)} destroyed again)",
                 "this is not how Twenty behaves; check TWENTY_BASE_URL"
                 + (f"; destroy by hand: {', '.join(left)}" if left else ""), left_behind=left)

    # -- 6: not-found status -------------------------------------------------------------------

    def check_not_found(self) -> None:
        try:
            self.client.records.get("people", str(uuid.uuid4()))
        except TwentyNotFound as exc:
            self.add("not-found status", "OK", f"a missing person answers {_said(exc)}", status_code=404)
            return
        except TwentyRecordRejected as exc:
            if any("not found" in m.lower() for m in exc.messages):
                self.add("not-found status", "WARN", f"a missing person answers {_said(exc)}",
                         "truth-forge reads only a 404 as 'already gone' (sync/push.py deletions, "
                         "services/sync/crm_client.py); here such a record counts as a failed record",
                         status_code=exc.status)
            else:
                self.add("not-found status", "WARN", f"a missing person answers {_said(exc)}",
                         "unexpected for Twenty: report it with the server's version", status_code=exc.status)
            return
        self.add("not-found status", "WARN", "a random id answered 2xx", "unexpected for Twenty",
                 status_code=200)

    # -- 7: soft-deleted visibility, read-only -------------------------------------------------

    def check_deleted_visible_read_only(self) -> None:
        page = self.client.records.find_page("people", filter="deletedAt[is]:NOT_NULL", limit=1)
        if not page.records:
            self.add("deleted visibility", "INFO", "a deletedAt filter returned no rows: no soft-deleted people "
                     "to see, so this is inconclusive", "rerun with --probe-writes to check with a probe record",
                     visible=None)
        else:
            self._report_deleted_visibility(bool(page.records[0].get("deletedAt")), "soft-deleted people")

    def _report_deleted_visibility(self, visible: bool, what: str) -> None:
        if visible:
            self.add("deleted visibility", "OK", f"a deletedAt filter returns {what} (the pull finds deletions "
                     "this way)", visible=True)
        else:
            self.add("deleted visibility", "FAIL", f"a deletedAt filter does NOT return {what}",
                     "the pull cannot see deletions on this server", visible=False)

    # -- 8: probe writes on one record ---------------------------------------------------------

    def probe_writes(self) -> None:
        token = uuid.uuid4().hex[:12]
        try:
            self.guarded("email case", lambda: self._create_probe(token))
            if self.probe_id is None:
                return
            self.guarded("empty email", self._probe_empty_email)
            self.guarded("updatedBy", self._probe_updated_by)
            self.guarded("deleted visibility", self._probe_soft_delete)
            self.guarded("restore updatedAt", self._probe_restore)
        finally:
            self._destroy_probe()

    def _person(self, token: str, email: str) -> dict[str, Any]:
        return {"name": {"firstName": PROBE_FIRST_NAME, "lastName": f"probe {token}"},
                "emails": {"primaryEmail": email, "additionalEmails": []}}

    def _create_probe(self, token: str) -> None:
        mixed = f"TF-Doctor-{token}@Example.com"
        ours = shapes.emails_value(mixed)["primaryEmail"]  # what truth-forge itself would send
        try:
            record = self._create(token, mixed)
        except TwentyRecordRejected as exc:
            status: Status = "FAIL" if ours != ours.lower() else "OK"
            self.add("email case", status, f"a mixed-case primaryEmail is refused: {_said(exc)}",
                     "truth-forge sends emails as the warehouse holds them (twenty/shapes.py emails_value); "
                     "lower-case them before writing" if status == "FAIL" else "", behaviour="refused")
            self._create(token, mixed.lower())
            return
        stored = (record.get("emails") or {}).get("primaryEmail")
        if stored == mixed.lower():
            self.add("email case", "OK", "a mixed-case primaryEmail is accepted and lower-cased",
                     behaviour="lower-cased")
        else:
            self.add("email case", "WARN", f"a mixed-case primaryEmail is stored as {stored!r}",
                     "truth-forge compares emails lower-cased; expect case-only differences", behaviour="kept")

    @property
    def _probe(self) -> str:
        """The probe person's id; the write probes run only once it exists."""
        if self.probe_id is None:
            raise RuntimeError("the probe person was not created")
        return self.probe_id

    def _create(self, token: str, email: str) -> dict[str, Any]:
        try:
            record = self.client.records.create("people", self._person(token, email))
        except TwentyTransientError as exc:
            if exc.maybe_applied:  # the answer was lost: find the probe by its unique email, to destroy it
                page = self.client.records.find_page(
                    "people", filter=f'emails.primaryEmail[eq]:"{email.lower()}"', limit=1)
                self.probe_id = page.records[0]["id"] if page.records else None
            raise
        self.probe_id = record["id"]
        return record

    def _probe_empty_email(self) -> None:
        ours = shapes.emails_value(None)["primaryEmail"]
        try:
            record = self.client.records.update("people", self._probe, {"emails": {"primaryEmail": "",
                                                                                     "additionalEmails": []}})
        except TwentyRecordRejected as exc:
            status: Status = "FAIL" if ours == "" else "OK"
            self.add("empty email", status, f'primaryEmail "" is refused: {_said(exc)}',
                     'truth-forge sends "" for a contact without email (twenty/shapes.py emails_value); '
                     "send null instead" if status == "FAIL" else "", behaviour="refused")
            return
        stored = (record.get("emails") or {}).get("primaryEmail")
        self.add("empty email", "OK", f'primaryEmail "" is accepted and stored as {json.dumps(stored)}',
                 behaviour="accepted", stored=stored)

    def _probe_updated_by(self) -> None:
        """The pull leaves out records whose `updatedBy` is our API key's, so check the two things it
        rests on: a batch upsert (the push's write) stamps us, and the pull's filter tells us apart."""
        outcome = self.client.records.create_many(
            "people", [{"id": self._probe, "jobTitle": "truth-forge doctor probe"}], upsert=True, match_key="id")
        if outcome.aborted is not None or outcome.failures:
            raise outcome.aborted or outcome.failures[0].error
        actor = outcome.succeeded[0].get("updatedBy") or {}
        name = str(actor.get("name") or "")
        if actor.get("source") != "API" or not name:
            self.add("updatedBy", "INFO", f"a batch upsert leaves updatedBy as {actor or None}",
                     "the pull reads truth-forge's own writes back once (about N/200 requests after pushing N)",
                     source=actor.get("source"), name=name or None)
            return
        if not own_writes.filterable(name):
            self.add("updatedBy", "WARN", f"a batch upsert stamps updatedBy API {name!r}, a name a filter cannot hold",
                     "rename the API key (letters, digits, spaces, . _ - @ ') so the pull can skip our own writes",
                     source="API", name=name)
            return
        probe = f'id[eq]:"{self.probe_id}"'
        ours = self.client.records.find_page("people", filter=f'and({probe},updatedBy.name[eq]:"{name}")', limit=1)
        others = self.client.records.find_page("people", filter=f"and({probe},{own_writes.clause_for(name)})", limit=1)
        works = bool(ours.records) and not others.records
        self.add("updatedBy", "OK" if works else "WARN",
                 f"a batch upsert stamps updatedBy API {name!r}; the pull's filter "
                 + ("leaves the probe out" if works else "does NOT tell it apart"),
                 "" if works else "the pull will read truth-forge's own writes back; report this Twenty version",
                 source="API", name=name, filterable=works)

    def _probe_soft_delete(self) -> None:
        deleted = self.client.records.delete("people", self._probe, soft=True)
        self.deleted_updated_at = deleted.get("updatedAt") if isinstance(deleted, dict) else None
        page = self.client.records.find_page(
            "people", filter=f'id[eq]:"{self.probe_id}",deletedAt[is]:NOT_NULL', limit=1)
        self._report_deleted_visibility(bool(page.records), "the soft-deleted probe")

    def _probe_restore(self) -> None:
        before = self.deleted_updated_at
        restored = self.client.records.restore("people", self._probe)
        after = restored.get("updatedAt")
        bumped = bool(before and after and after > before)
        self.add("restore updatedAt", "OK" if bumped else "WARN",
                 f"restoring {'moves' if bumped else 'does NOT move'} updatedAt ({before} -> {after})",
                 "" if bumped else "an updatedAt-based pull misses restores on this server", bumped=bumped)

    def _destroy_probe(self) -> None:
        if self.probe_id is None:
            return
        try:
            self.client.records.delete("people", self.probe_id, soft=False)
        except TwentyError as exc:
            self.add("probe cleanup", "FAIL", f"probe person {self.probe_id} NOT destroyed: {_said(exc)}",
                     f"destroy it by hand: DELETE /rest/people/{self.probe_id}", left_behind=self.probe_id)
            return
        self.add("probe cleanup", "OK", f"probe person {self.probe_id} destroyed (permanently)",
                 left_behind=None)

    # -- 5: rate-limit headers (read from every answer of the run) -----------------------------

    # -- one key name, one key ---------------------------------------------------------------

    def check_key_name(self) -> None:
        """No other API key may carry our key's name: `updatedBy` holds the name only, so that key's
        edits would be skipped as ours. Our name comes from the write probe's stamp, or from the key
        list by the id in our token (an API key is a JWT whose `jti` is the key's id)."""
        stamped = next((f.details.get("name") for f in self.findings
                        if f.check == "updatedBy" and f.details.get("source") == "API"), None)
        try:
            keys = self.client.metadata.list_api_keys()
        except TwentyError as exc:
            said = own_writes.unlisted(exc, stamped).said
            self.add("api key name", "WARN" if isinstance(exc, TwentyAuthError) else "INFO", said,
                     "give the key's role the 'API keys and webhooks' permission, or check the names by hand "
                     "in Twenty (Settings > APIs & Webhooks)", status_code=exc.status, listed=False)
            return
        kid = _api_key_id(self.secret)
        name = stamped or next((k.get("name") for k in keys if kid is not None and k.get("id") == kid), None)
        if isinstance(name, str) and name:
            named = own_writes.judge_key_name(keys, name)
            statuses: dict[str, Status] = {"unique": "OK", "shared": "WARN", "unknown": "INFO"}
            status = statuses[named.outcome]
            self.add("api key name", status, named.said,
                     "rename the other keys in Twenty so each has its own name" if named.outcome == "shared" else "",
                     listed=True, name=name, same_name=named.same_name)
            return
        names = [str(k.get("name")) for k in keys]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            self.add("api key name", "WARN", f"{len(keys)} API keys listed; these names are used by more than one "
                     f"key: {', '.join(map(repr, repeated))}. If truth-forge's key has one of them, the other key's "
                     "edits are skipped as truth-forge's own",
                     "give every key its own name (or run doctor --probe-writes to learn which name is ours)",
                     listed=True, repeated=repeated)
            return
        self.add("api key name", "OK", f"{len(keys)} API keys listed, each with its own name", listed=True)

    def check_rate_headers(self) -> None:
        budget = f"client budget {BUDGET_SETTING}={self.settings.twenty_requests_per_minute}/min"
        seen = [a for a in self.log.answers if any(h in a.headers for h in _RATE_HEADERS)]
        limited = self.client.transport.stats.rate_limited
        if seen:
            last = seen[-1].headers
            self.add("rate-limit headers", "WARN" if limited else "OK",
                     f"rate limits v2 headers seen on {len(seen)} answer(s): limit "
                     f"{last.get('x-ratelimit-limit', '?')}, remaining {last.get('x-ratelimit-remaining', '?')}, "
                     f"Retry-After {last.get('retry-after', '-')}; {budget}",
                     f"keep {BUDGET_SETTING} at or below the limit", headers=last, rate_limited=limited)
            return
        self.add("rate-limit headers", "WARN" if limited else "INFO",
                 f"none on the {len(self.log.answers)} answers seen ({limited} were 429); Twenty sends "
                 f"X-RateLimit-*/Retry-After only with a 429 under rate limits v2; {budget}",
                 "another client shares this workspace's budget: lower the budget" if limited else
                 f"keep {BUDGET_SETTING} at or below the workspace's limit (100/min by default)",
                 headers={}, rate_limited=limited)


def _api_key_id(token: str) -> str | None:
    """The key id (`jti`) in an API key's token, read without checking its signature; None if the
    token is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    jti = payload.get("jti") if isinstance(payload, dict) else None
    return jti if isinstance(jti, str) else None


def run_doctor(settings: Settings | None = None, *, api_key: str | None = None, probe_writes: bool = False,
               schema: CrmSchema | None = None, http_log: ResponseLog | None = None) -> DoctorReport:
    """Check the configured workspace; see the module docstring. Never raises for what it finds."""
    settings = settings or Settings()
    url = display_url(settings.twenty_base_url)
    if api_key is None:
        try:
            found = find_api_key(settings)
        except ValueError as exc:
            first, *tried = str(exc).splitlines()
            finding = Finding("auth", "FAIL", first.split(". Tried")[0],
                              "tried: " + "; ".join(line.strip().lstrip("- ") for line in tried), {"tried": str(exc)})
            return DoctorReport(url, "nowhere", probe_writes, [finding], 0, could_not_run=True)
        api_key, key_source = found.value, found.source
    else:
        key_source = "the caller"
    schema = schema or CrmSchema.load(settings.crm_schema_file)
    log = http_log or ResponseLog()
    with TwentyClient.from_settings(settings, api_key=api_key, max_retries=min(settings.twenty_max_retries,
                                    DOCTOR_MAX_RETRIES), http_transport=log) as client:
        doctor = Doctor(client, log, settings, schema, api_key)
        could_not_run = False
        try:
            doctor.check_reachable(key_source)
        except CouldNotRun:
            could_not_run = True
        else:
            doctor.guarded("metadata", doctor.check_metadata)
            if doctor.metadata_ok:
                doctor.guarded("custom fields", doctor.check_fields)
            doctor.guarded("batch limit", doctor.check_batch_limit)
            doctor.guarded("not-found status", doctor.check_not_found)
            if probe_writes:
                doctor.probe_writes()
            else:
                doctor.guarded("deleted visibility", doctor.check_deleted_visible_read_only)
            doctor.check_key_name()
            doctor.check_rate_headers()
        return DoctorReport(url, key_source, probe_writes, doctor.findings, client.transport.stats.requests,
                            could_not_run=could_not_run)
