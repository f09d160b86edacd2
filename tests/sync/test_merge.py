"""The three-way merge's whole decision table, as plain unit tests of a pure function."""

from __future__ import annotations

import pytest

from truth_forge.sync.merge import FieldConflict, Policy, base_after_our_write, changed_since, merge_fields


def crm_wins(_: str) -> Policy:
    return "crm_wins"


def warehouse_wins(_: str) -> Policy:
    return "warehouse_wins"


BASE = {"canonical_name": "Ada Lovelace", "category_code": "B", "primary_email": "ada@example.com"}


def test_nothing_changed_means_nothing_to_do() -> None:
    result = merge_fields(BASE, dict(BASE), dict(BASE), crm_wins)
    assert (result.to_warehouse, result.to_twenty, result.conflicts) == ({}, {}, [])
    assert result.base == BASE


def test_a_field_changed_only_in_twenty_comes_to_the_warehouse() -> None:
    result = merge_fields(BASE, dict(BASE), {**BASE, "category_code": "A"}, warehouse_wins)
    assert result.to_warehouse == {"category_code": "A"} and result.to_twenty == {} and result.conflicts == []
    assert result.base["category_code"] == "A"


def test_a_field_changed_only_in_the_warehouse_goes_to_twenty_and_keeps_its_base_until_sent() -> None:
    result = merge_fields(BASE, {**BASE, "category_code": "H"}, dict(BASE), crm_wins)
    assert result.to_twenty == {"category_code": "H"} and result.to_warehouse == {} and result.conflicts == []
    assert result.base["category_code"] == "B"  # still "B" until the send lands


def test_different_fields_changed_on_each_side_both_survive() -> None:
    result = merge_fields(BASE, {**BASE, "category_code": "H"}, {**BASE, "canonical_name": "Ada King"}, crm_wins)
    assert result.to_twenty == {"category_code": "H"}
    assert result.to_warehouse == {"canonical_name": "Ada King"}
    assert result.conflicts == []


def test_the_same_change_on_both_sides_is_not_a_conflict() -> None:
    both = {**BASE, "category_code": "A"}
    result = merge_fields(BASE, dict(both), dict(both), warehouse_wins)
    assert (result.to_warehouse, result.to_twenty, result.conflicts) == ({}, {}, [])
    assert result.base["category_code"] == "A"


@pytest.mark.parametrize(("policy", "winner", "to_warehouse", "to_twenty", "new_base"), [
    (crm_wins, "twenty", {"category_code": "A"}, {}, "A"),
    (warehouse_wins, "warehouse", {}, {"category_code": "H"}, "B"),
])
def test_different_changes_to_one_field_are_a_conflict_settled_by_policy(
        policy, winner, to_warehouse, to_twenty, new_base) -> None:  # type: ignore[no-untyped-def]
    result = merge_fields(BASE, {**BASE, "category_code": "H"}, {**BASE, "category_code": "A"}, policy)
    assert result.conflicts == [FieldConflict("category_code", "B", "H", "A", winner)]
    assert result.to_warehouse == to_warehouse and result.to_twenty == to_twenty
    assert result.base["category_code"] == new_base
    assert "base 'B', warehouse 'H', Twenty 'A'" in result.conflicts[0].describe()


def test_the_policy_is_asked_per_field() -> None:
    def per_field(name: str) -> Policy:
        return "warehouse_wins" if name == "category_code" else "crm_wins"

    result = merge_fields(BASE, {**BASE, "category_code": "H", "canonical_name": "W"},
                          {**BASE, "category_code": "A", "canonical_name": "T"}, per_field)
    assert result.to_twenty == {"category_code": "H"} and result.to_warehouse == {"canonical_name": "T"}
    assert sorted(c.winner for c in result.conflicts) == ["twenty", "warehouse"]


def test_composite_subfields_merge_separately() -> None:
    """A new additional email on one side and a new primary on the other: both kept."""
    base = {"primary_email": "a@x.org", "additional_emails": []}
    result = merge_fields(base, {"primary_email": "a@x.org", "additional_emails": ["b@x.org"]},
                          {"primary_email": "new@x.org", "additional_emails": []}, crm_wins)
    assert result.to_warehouse == {"primary_email": "new@x.org"}
    assert result.to_twenty == {"additional_emails": ["b@x.org"]}
    assert result.conflicts == []


def test_a_company_link_changed_on_both_sides_is_one_conflict() -> None:
    base = {"business_id": 1}
    result = merge_fields(base, {"business_id": 2}, {"business_id": 3}, crm_wins)
    assert result.conflicts == [FieldConflict("business_id", 1, 2, 3, "twenty")]
    assert result.to_warehouse == {"business_id": 3}


def test_a_field_only_one_side_can_see_is_left_out_of_the_decision() -> None:
    # Twenty links the person to a company we do not know yet: no business_id in its view.
    result = merge_fields({"business_id": 1}, {"business_id": 1}, {}, crm_wins)
    assert (result.to_warehouse, result.to_twenty, result.conflicts, result.base) == ({}, {}, [], {})


def test_without_a_base_every_difference_is_settled_by_policy() -> None:
    result = merge_fields(None, {"category_code": "H", "canonical_name": "Same"},
                          {"category_code": "A", "canonical_name": "Same"}, crm_wins)
    assert result.to_warehouse == {"category_code": "A"}
    assert [c.field for c in result.conflicts] == ["category_code"]


def test_push_only_fields_go_out_when_they_differ_from_what_was_last_sent() -> None:
    base = {"llm_context": '{"v":1}', "category_code": "B"}
    result = merge_fields(base, {"llm_context": '{"v":2}', "category_code": "B"},
                          {"category_code": "B"}, crm_wins, push_only=("llm_context",))
    assert result.to_twenty == {"llm_context": '{"v":2}'} and result.conflicts == []
    unchanged = merge_fields(base, dict(base), {"category_code": "B"}, crm_wins, push_only=("llm_context",))
    assert unchanged.to_twenty == {}


def test_changed_since_lists_what_a_push_must_send() -> None:
    assert changed_since(BASE, {**BASE, "category_code": "X", "llm_context": "new"}) == \
        {"category_code": "X", "llm_context": "new"}
    assert changed_since(BASE, dict(BASE)) == {}


# -- a record whose last writer is us (issue 18, point 1) -----------------------------------------


@pytest.mark.parametrize(("warehouse", "twenty", "to_warehouse", "to_twenty"), [
    # Ours landed ("Ada Once"), then the warehouse moved on: its newer value goes out, no conflict.
    ({"canonical_name": "Ada Twice"}, {"canonical_name": "Ada Once"}, {}, {"canonical_name": "Ada Twice"}),
    # Changed in Twenty alone: maybe a person's edit that our write (of other fields) left in place.
    ({}, {"category_code": "A"}, {"category_code": "A"}, {}),
    # Ours landed and the warehouse still holds it: nothing to do.
    ({"category_code": "C"}, {"category_code": "C"}, {}, {}),
])
def test_our_landed_write_is_the_base_for_fields_changed_on_both_sides(
        warehouse: dict[str, str], twenty: dict[str, str], to_warehouse: dict[str, str],
        to_twenty: dict[str, str]) -> None:
    mine, theirs = {**BASE, **warehouse}, {**BASE, **twenty}
    result = merge_fields(base_after_our_write(BASE, mine, theirs), mine, theirs, crm_wins)
    assert (result.to_warehouse, result.to_twenty, result.conflicts) == (to_warehouse, to_twenty, [])


def test_with_no_base_our_landed_values_are_the_base_whole() -> None:
    mine, theirs = {**BASE, "category_code": "E"}, {**BASE, "canonical_name": "Ada Once"}
    result = merge_fields(base_after_our_write(None, mine, theirs), mine, theirs, crm_wins)
    # Every field the warehouse holds otherwise goes out: nothing says which side moved, but Twenty's were ours.
    assert result.to_twenty == {"canonical_name": "Ada Lovelace", "category_code": "E"}
    assert result.conflicts == [] and result.to_warehouse == {}
