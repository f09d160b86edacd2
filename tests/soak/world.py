"""A workspace and a warehouse that live through many trials, with seeded edits on both sides between runs.

Why it exists: a soak has to prove more than "both sides agree" (they also agree when both lost the
same edit). Every change made here is remembered as an `Expectation` (this contact's category is now
C; the person made in Twenty has a contact with this name; this contact is deleted) and checked after
the next convergence, so an edit the sync dropped, or overwrote with a stale value, is caught. Before a
run, edits on the two sides touch different records, so no expectation depends on conflict policy.

Between a killed run and its rerun (`edit_between`) the edits go where the killed run was writing: the
records changed before it, edited again on the same side (the newer value must win over the one the
killed run may have half sent), on the other side, or on both sides at once (a conflict: the sync's
policy, `crm_wins`, decides). Only one pairing is left out: a warehouse edit of a field Twenty had
changed before the kill, because whether that is a conflict depends on whether the killed run had
already brought Twenty's value over, which the kill point decides, not the sync.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.soak.convergence import (
    WarehouseSide,
    check_convergence,
    norm_email,
    norm_name,
    norm_option,
    norm_text,
    read_warehouse,
    summarize,
)
from tests.soak.harness import PlainTwenty, SyncProcess, SyncRun, fresh_workspace, sync_env
from truth_forge.sandbox import SandboxServer
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

FIRST = ["Ines", "Tariq", "Mei", "Olu", "Sven", "Lucía", "Ravi", "Noa", "Kofi", "Hana"]
LAST = ["Okoro", "Lindqvist", "Zhang", "Mendes", "Haddad", "Novak", "Ibarra", "Sato", "Fischer", "Adeyemi"]
CATEGORIES = "ABCDEFGHX"
RELATIONSHIPS = ["FAMILY", "FRIEND", "COLLEAGUE", "MENTOR", "CLIENT", "OTHER"]
# Fields both sides edit, for the edits made between a kill and its rerun.
TWO_WAY = ["canonical_name", "category_code", "subcategory_code", "primary_email"]
POLICY = "crm_wins"  # the sync's default: a field edited on both sides takes Twenty's value
COMPARE: dict[str, Callable[[Any], Any]] = {
    "canonical_name": norm_name, "primary_email": norm_email, "category_code": norm_option,
    "relationship_category": norm_option, "subcategory_code": norm_text, "industry": norm_text,
    "business_name": norm_text,
}


@dataclass
class Expectation:
    """After the next convergence, this warehouse row has this value (or is deleted, for column "deleted")."""

    object_type: str
    key: int | None  # the warehouse key, or None for a record made in Twenty (found by crm_id)
    crm_id: str | None
    column: str
    value: Any
    why: str

    def broken(self, side: WarehouseSide) -> str | None:
        key = self.key
        if key is None:
            state = next((s for (obj, k), s in side.state.items()
                          if obj == self.object_type and s.get("crm_id") == self.crm_id), None)
            if state is None:
                return f"{self.why}: no warehouse row took Twenty record {self.crm_id}"
            key = int(state["record_key"])
        rows = side.contacts if self.object_type == "person" else side.businesses
        row = rows.get(key)
        if row is None:
            return f"{self.why}: warehouse row {key} is missing"
        if self.column == "deleted":
            return None if row["deleted_at"] is not None else f"{self.why}: row {key} is not deleted"
        if row["deleted_at"] is not None:
            return f"{self.why}: row {key} is deleted"
        same = COMPARE.get(self.column, lambda v: v)
        if same(row[self.column]) != same(self.value):
            return f"{self.why}: row {key} {self.column} is {row[self.column]!r}, not {self.value!r}"
        return None


class World:
    """One soak world: a DuckDB file, the sandbox workspace, a seeded RNG, and what must be true next."""

    def __init__(self, sandbox: SandboxServer, workdir: Path, seed: int, *, contacts: int = 24,
                 companies: int = 4, batch_size: int = 2, url_options: str = "") -> None:
        self.sandbox, self.workdir, self.seed = sandbox, workdir, seed
        self.url_options = url_options  # the sync's warehouse URL options (e.g. BigQuery's ways on DuckDB)
        self.rng = random.Random(seed)
        self.db = workdir / "warehouse.duckdb"
        self.settings: dict[str, Any] = {"twenty_batch_size": batch_size}
        self.expectations: list[Expectation] = []
        self.serial = self.runs = 0
        # (contact key, column) -> the sides ("w", "t") that edited it since the last convergence
        self.edited: dict[tuple[int, str], set[str]] = defaultdict(set)
        # (contact key, column) -> every value it has had since the last convergence, that one included:
        # an edit always picks a new value, or a "conflict" could be one side setting back the base.
        self.seen: dict[tuple[int, str], set[str]] = defaultdict(set)
        self.base: WarehouseSide | None = None  # the warehouse as the trial found it (both sides agreed)
        fresh_workspace(sandbox)
        with open_warehouse(f"duckdb:///{self.db}") as warehouse:
            generate_sample_data(warehouse, contacts, companies, seed=seed)
        self.live = {"person": contacts, "company": companies}
        with PlainTwenty(sandbox) as twenty:
            for _ in range(2):
                self.serial += 1
                self._twenty_create(twenty)

    # --- runs and checks ---------------------------------------------------------------------------

    def forget_setup_check(self) -> None:
        """Make the next run verify the workspace's fields (it remembers a complete setup for an hour)."""
        with open_warehouse(f"duckdb:///{self.db}") as warehouse:
            warehouse._run("DELETE FROM {crm_sync_kv} WHERE key LIKE 'watermark:setup-verified:%'", ())

    def start(self, **settings: Any) -> SyncProcess:
        self.runs += 1
        self.sandbox.clear_request_log()
        env = sync_env(self.sandbox, self.db, self.url_options, **{**self.settings, **settings})
        return SyncProcess(env, self.workdir, f"run{self.runs}")

    def run(self, **settings: Any) -> SyncRun:
        return self.start(**settings).wait()

    def problems(self) -> tuple[list[str], int]:
        """What is wrong now (discrepancies, then broken expectations), and how many live records were checked."""
        with PlainTwenty(self.sandbox) as twenty:
            found = check_convergence(self.db, twenty, live_people=self.live["person"],
                                      live_companies=self.live["company"])
        side = read_warehouse(self.db)
        broken = [b for b in (e.broken(side) for e in self.expectations) if b]
        out = [f"{len(found)} discrepancies:\n{summarize(found, 12)}"] if found else []
        return out + broken, self.live["person"] + self.live["company"]

    def settled(self) -> None:
        """The expectations held: start the next trial with none."""
        self.expectations.clear()
        self.edited.clear()
        self.seen.clear()
        self.base = None

    # --- seeded changes on both sides --------------------------------------------------------------

    def mutate(self, changes: int) -> None:
        """`changes` random edits, inserts and deletes, on both sides, on different records."""
        side = read_warehouse(self.db)
        self.base = self.base or side
        with PlainTwenty(self.sandbox) as twenty:
            people = {p["contactId"]: p for p in twenty.records("people") if p.get("contactId")}
            companies = {c["businessId"]: c for c in twenty.records("companies") if c.get("businessId")}
            keys = sorted(k for k, c in side.contacts.items() if c["deleted_at"] is None and str(k) in people)
            self.rng.shuffle(keys)
            business_keys = sorted(k for k, b in side.businesses.items()
                                   if b["deleted_at"] is None and str(k) in companies)
            self.rng.shuffle(business_keys)
            with open_warehouse(f"duckdb:///{self.db}") as warehouse:
                for _ in range(changes):
                    action = self.rng.choice(["w_edit"] * 4 + ["t_edit"] * 4 + ["w_insert", "t_create", "w_delete",
                                                                                 "t_delete", "w_company", "t_company"])
                    self.serial += 1
                    if action in ("w_company", "t_company"):
                        if business_keys:
                            self._company_edit(action, business_keys.pop(), warehouse, twenty, companies)
                    elif action == "w_insert":
                        self._warehouse_insert(warehouse, side)
                    elif action == "t_create":
                        self._twenty_create(twenty)
                    elif keys:
                        key = keys.pop()
                        {"w_edit": self._warehouse_edit, "t_edit": self._twenty_edit, "w_delete": self._warehouse_delete,
                         "t_delete": self._twenty_delete}[action](key, warehouse, twenty, people[str(key)])

    def edit_between(self, changes: int) -> int:
        """After a kill, before the rerun: `changes` seeded edits, mostly of records changed before the kill
        (the ones the killed run was writing), on the warehouse, on Twenty or on both. Returns how many."""
        side = read_warehouse(self.db)
        doomed = {e.key for e in self.expectations if e.column == "deleted"}
        written = sorted({e.key for e in self.expectations if e.object_type == "person" and e.key is not None} - doomed)
        made = 0
        with PlainTwenty(self.sandbox) as twenty:
            people = {int(p["contactId"]): p for p in twenty.records("people")
                      if str(p.get("contactId") or "").isdigit()}
            # Not the people made in Twenty this trial: if the stopped run took one in without saving its
            # state, the rerun merges it afresh (no base) and the policy decides every field.
            made_in_twenty = {e.crm_id for e in self.expectations if e.crm_id}
            live = sorted(k for k, c in side.contacts.items() if c["deleted_at"] is None and k not in doomed
                          and (k in written or (k in people and people[k]["id"] not in made_in_twenty)))
            with open_warehouse(f"duckdb:///{self.db}") as warehouse:
                for _ in range(changes):
                    pool = written if written and self.rng.random() < 0.75 else live
                    key = self.rng.choice(pool)
                    column = self.rng.choice(TWO_WAY)
                    sides = self.rng.choice(["w", "t", "both"])
                    if "t" in self.edited[(key, column)] and sides == "w":
                        sides = "both"  # see the module docstring: a lone warehouse edit here is no fair test
                    if key not in people and sides != "w":
                        continue  # not (yet) in Twenty, or deleted there: only the warehouse can edit it
                    if key not in side.contacts or side.contacts[key]["deleted_at"] is not None:
                        continue
                    self.serial += 1
                    made += 1
                    # On both sides the policy's winner is edited last, so its expectation is the one kept.
                    order = {"w": ["w"], "t": ["t"], "both": ["w", "t"] if POLICY == "crm_wins" else ["t", "w"]}[sides]
                    why = "edit on both sides after the kill" if sides == "both" else "edit after the kill"
                    for one in order:
                        if one == "w":
                            self._warehouse_edit(key, warehouse, twenty, None, column, why=why)
                        else:
                            self._twenty_edit(key, warehouse, twenty, people[key], column, why=why)
        return made

    def _expect(self, object_type: str, key: int | None, column: str, value: Any, why: str,
                crm_id: str | None = None) -> None:
        # A newer change of the same field replaces what the older one expected.
        self.expectations = [e for e in self.expectations
                             if (e.object_type, e.key, e.crm_id, e.column) != (object_type, key, crm_id, column)]
        self.expectations.append(Expectation(object_type, key, crm_id, column, value, f"{why} (change {self.serial})"))

    def _new_category(self, key: int) -> str:
        """A category this contact has not had since the last convergence (names and emails carry a serial)."""
        was = self.base.contacts.get(key, {}).get("category_code") if self.base else None
        return self.rng.choice([c for c in CATEGORIES if c != was and c not in self.seen[(key, "category_code")]])

    def _name(self) -> tuple[str, str]:
        return self.rng.choice(FIRST), f"{self.rng.choice(LAST)}{self.serial}"

    def _email(self, side: str) -> str:
        return f"{side}{self.seed}.{self.serial}@Example.org"  # mixed case: Twenty stores it lower-cased

    def _warehouse_edit(self, key: int, warehouse: Any, twenty: PlainTwenty, person: dict[str, Any] | None,
                        column: str | None = None, why: str = "warehouse edit") -> None:
        column = column or self.rng.choice(["canonical_name", "category_code", "subcategory_code",
                                            "primary_email", "llm_context"])
        value: Any = {"canonical_name": " ".join(self._name()), "category_code": self._new_category(key),
                      "subcategory_code": f"S{self.serial}", "primary_email": self._email("w"),
                      "llm_context": {"note": f"soak {self.seed}/{self.serial}"}}[column]
        row = {"contact_id": key, column: value}
        if column == "primary_email":
            row["additional_emails"] = []
        warehouse.upsert_contacts([row])
        self.edited[(key, column)].add("w")
        self.seen[(key, column)].add(str(value))
        self._expect("person", key, column, value, f"{why} of {column}")

    def _twenty_edit(self, key: int, warehouse: Any, twenty: PlainTwenty, person: dict[str, Any],
                     column: str | None = None, why: str = "Twenty edit") -> None:
        column = column or self.rng.choice(["canonical_name", "category_code", "subcategory_code",
                                            "primary_email", "relationship_category"])
        first, last = self._name()
        patch, value = {
            "canonical_name": ({"name": {"firstName": first, "lastName": last}}, f"{first} {last}"),
            "category_code": ({"categoryCode": (c := self._new_category(key))}, c),
            "subcategory_code": ({"subcategoryCode": f"T{self.serial}"}, f"T{self.serial}"),
            "primary_email": ({"emails": {"primaryEmail": (e := self._email("t").lower()), "additionalEmails": []}}, e),
            "relationship_category": ({"relationshipCategory": (r := self.rng.choice(RELATIONSHIPS))}, r),
        }[column]
        twenty.update("people", person["id"], patch)
        self.edited[(key, column)].add("t")
        self.seen[(key, column)].add(str(value))
        self._expect("person", key, column, value, f"{why} of {column}")

    def _warehouse_delete(self, key: int, warehouse: Any, twenty: PlainTwenty, person: dict[str, Any]) -> None:
        warehouse.soft_delete("person", [key])
        self.live["person"] -= 1
        self._expect("person", key, "deleted", True, "warehouse delete")

    def _twenty_delete(self, key: int, warehouse: Any, twenty: PlainTwenty, person: dict[str, Any]) -> None:
        twenty.soft_delete("people", person["id"])
        self.live["person"] -= 1
        self._expect("person", key, "deleted", True, "Twenty delete")

    def _warehouse_insert(self, warehouse: Any, side: WarehouseSide) -> None:
        # Above every contact and every key the sync has claimed, as a careful warehouse user would pick.
        taken = [*side.contacts, *(int(k) for (obj, k), _ in side.state.items() if obj == "person"),
                 *(e.key for e in self.expectations if e.key is not None)]
        key = max(taken, default=0) + 1
        name, email = " ".join(self._name()), self._email("n")
        warehouse.upsert_contacts([{"contact_id": key, "canonical_name": name, "category_code": "C",
                                    "primary_email": email, "additional_emails": []}])
        self.live["person"] += 1
        self.seen[(key, "category_code")].add("C")
        self._expect("person", key, "canonical_name", name, "warehouse insert")
        self._expect("person", key, "primary_email", email, "warehouse insert")

    def _twenty_create(self, twenty: PlainTwenty) -> None:
        first, last = self._name()
        email = self._email("c").lower()
        made = twenty.create("people", {"name": {"firstName": first, "lastName": last}, "categoryCode": "F",
                                        "emails": {"primaryEmail": email, "additionalEmails": []}})
        self.live["person"] += 1
        self._expect("person", None, "canonical_name", f"{first} {last}", "Twenty create", crm_id=made["id"])
        self._expect("person", None, "primary_email", email, "Twenty create", crm_id=made["id"])

    def _company_edit(self, action: str, key: int, warehouse: Any, twenty: PlainTwenty,
                      companies: dict[str, dict[str, Any]]) -> None:
        if action == "w_company":
            value = f"Industry {self.serial}"
            warehouse.upsert_businesses([{"business_id": key, "industry": value}])
            self._expect("company", key, "industry", value, "warehouse company edit")
        else:
            value = f"Renamed {self.serial}"
            twenty.update("companies", companies[str(key)]["id"], {"name": value})
            self._expect("company", key, "business_name", value, "Twenty company edit")
