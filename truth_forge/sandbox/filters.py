"""Twenty's REST `filter` grammar: parse, check against metadata, evaluate on records.

`field[comparator]:value`, comma-separated conditions AND-ed at the root, nested `and()`,
`or()`, `not()`, dotted composite subfields. Parsing follows Twenty's own steps (bracket
balance check, default `and(...)`, top-level split, base-filter split) character for character,
quirks included (its quote tracking toggles, so an apostrophe in a value swallows the commas
after it), and reuses its error texts, so a client's malformed filter fails here the way it
fails on a real server (docs/twenty-facts.md §13).

Evaluation is SQL's, because Twenty turns the filter into one WHERE clause: a comparison with
NULL is unknown, not false, `not()` of unknown stays unknown, and only rows for which the whole
filter is true are returned. Text-like columns also match their "null-equivalent" empty value
the way Twenty's where-clause builder adds it (docs/twenty-facts.md §9).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from truth_forge.sandbox.clock import parse_iso_ms
from truth_forge.sandbox.errors import bad_request, unknown_field
from truth_forge.sandbox.metadata import ACTOR_SOURCES, COMPOSITE_TYPES, ObjectDef

COMPARATORS = (
    "eq", "neq", "in", "containsAny", "is", "gt", "gte", "lt", "lte", "startsWith", "endsWith",
    "like", "ilike",
)
_NUMERIC_TYPES = frozenset({"NUMBER", "NUMERIC", "POSITION"})


@dataclass
class Condition:
    path: list[str]
    comparator: str
    raw: str
    # Filled in by `bind`:
    leaf_type: str = ""
    value: Any = None
    # The empty value Twenty treats like NULL for this column ('' or []), or None if it has none.
    null_equivalent: Any = None


@dataclass
class Conjunction:
    kind: str
    children: list[Node]


Node = Condition | Conjunction


# --------------------------------------------------------------------------------------------
# Parsing


def parse_filter(text: str) -> Node:
    _check_brackets(text)
    if not _ROOT_CONJUNCTION.match(text):
        text = f"and({text})"
    return _parse(text)


# parse-filter.util.ts: a text is a conjunction when it starts with `and(`, `or(` or `not(` and
# ends with `)`, whether or not those two parentheses match each other. JavaScript's `.` stops at
# a line break, as Python's does without DOTALL.
_ROOT_CONJUNCTION = re.compile(r"^(and|or|not)\((.+)\)$")
_BASE_SHAPE = re.compile(r"^(.+)\[(.+)\]:(.+)$")


def _check_brackets(text: str) -> None:
    diff = text.count("(") - text.count(")")
    if diff:
        hint = (f"{diff} close bracket{'s are' if diff > 1 else ' is'}" if diff > 0
                else f"{-diff} open bracket{'s are' if -diff > 1 else ' is'}")
        raise bad_request(f"'filter' invalid. {hint} missing in the query", code=_INVALID_FILTER)


_INVALID_FILTER = "INVALID_FILTER_QUERY_PARAM"  # RestInputRequestParserException's code


def split_filter_content(text: str) -> list[str]:
    """parse-filter-content.util.ts, step for step: the conditions of one conjunction.

    It splits on commas at parenthesis depth 1 that are outside brackets and quotes, but its
    trackers are plain toggles: every `"` flips "inside double quotes", every `'` flips "inside
    single quotes" (even inside a double-quoted value), every `[` or `]` flips "inside
    brackets", and parentheses are counted inside quotes too. So one apostrophe in a value
    (`name[eq]:"O'Brien"`) leaves every later comma of that conjunction unsplit: the rest of the
    conjunction becomes part of that condition's value, or a condition whose field name is
    nonsense. Characters outside the outer parentheses are dropped.
    """
    in_brackets = in_double = in_single = False
    depth = 0
    parts: list[str] = []
    current: list[str] = []
    for c in text:
        keep = depth >= 1
        if c == "(":
            depth += 1
        if c == ")":
            depth -= 1
            keep = depth >= 1
        if c in "[]":
            in_brackets = not in_brackets
        if c == '"':
            in_double = not in_double
        if c == "'":
            in_single = not in_single
        if c == "," and depth == 1 and not (in_brackets or in_double or in_single):
            parts.append("".join(current))
            current = []
            keep = False
        if keep:
            current.append(c)
    parts.append("".join(current))
    return parts


def _parse(text: str) -> Node:
    match = _ROOT_CONJUNCTION.match(text)
    if match:
        kind = match.group(1)
        children = [_parse(part) for part in split_filter_content(text)]
        if kind == "not" and len(children) > 1:
            raise bad_request("'filter' invalid. 'not' conjunction should contain only 1 "
                              "condition. eg: not(field[eq]:1)", code=_INVALID_FILTER)
        return Conjunction(kind, children)
    fields, comparator, raw = parse_base_filter(text)
    return Condition(fields.split("."), comparator, raw)


def parse_base_filter(text: str) -> tuple[str, str, str]:
    """parse-base-filter.util.ts: `field[comparator]:value`, read character by character.

    The field is everything before the first `[`, the comparator runs to the next `]`, and the
    value starts after the first `:` that follows it (a `:` before any `[` starts it too).
    """
    if _BASE_SHAPE.match(text) is None:
        raise bad_request(f"'filter' invalid for '{text}'. eg: price[gte]:10")
    fields: list[str] = []
    comparator: list[str] = []
    value: list[str] = []
    fill_fields, fill_comparator, fill_value = True, False, False
    for c in text:
        if fill_value:
            value.append(c)
        if c == "]" and not fill_value:
            fill_comparator = False
        if c == ":" and not fill_comparator:
            fill_value = True
        if fill_comparator:
            comparator.append(c)
        if c == "[" and fill_fields:
            fill_fields, fill_comparator = False, True
        if fill_fields:
            fields.append(c)
    op = "".join(comparator)
    if op not in COMPARATORS:
        raise bad_request(f"'filter' invalid for '{text}', comparator {op} not in "
                          f"{', '.join(COMPARATORS)}")
    return "".join(fields), op, "".join(value)


# --------------------------------------------------------------------------------------------
# Binding to metadata


def bind(node: Node, obj: ObjectDef) -> Node:
    """Resolve each condition's field and cast its value; unknown fields give 400."""
    if isinstance(node, Conjunction):
        for child in node.children:
            bind(child, obj)
        return node
    node.leaf_type = _leaf_type(node.path, obj)
    node.value = _cast_value(node, obj)
    node.null_equivalent = _null_equivalent(node.path, obj)
    _check_enum_values(node, obj)
    return node


def _check_enum_values(cond: Condition, obj: ObjectDef) -> None:
    """Enum columns refuse values they do not list, two ways (docs/twenty-facts.md §9).

    A SELECT or MULTI_SELECT field is checked by the REST layer before any SQL
    (check-filter-enum-values.util.ts): every value, whatever the comparator (so a `like`
    pattern too), must be one of the options, NULL or NOT_NULL. An enum subfield of a composite
    (an ACTOR's `source`) is not checked there; Postgres refuses an unknown literal in `=`, `!=`
    or `IN` (`invalid input value for enum`, answered 400), while `like`, `ilike`, `startsWith`
    and `endsWith` compare the column cast to text and pass.
    """
    f = obj.field(cond.path[0])
    if f is None or cond.comparator == "is":
        return
    values = cond.value if isinstance(cond.value, list) else [cond.value]
    if f.type in ("SELECT", "MULTI_SELECT") and len(cond.path) == 1:
        allowed = ["NULL", "NOT_NULL", *f.option_values]
        for value in values:
            if value not in allowed:
                listed = "', '".join(f.option_values)
                raise bad_request(f"'filter' enum value '{value}' not available in '{f.name}' enum. "
                                  f"Available enum values are ['{listed}']")
        return
    if f.type == "ACTOR" and cond.path[1:] == ["source"] and cond.comparator not in _TEXT_CAST_COMPARATORS:
        for value in values:
            if value not in ACTOR_SOURCES:
                raise bad_request(f'invalid input value for enum "{obj.name_singular}_{f.name}Source_enum": '
                                  f'"{value}"')


# compute-where-condition-parts.ts casts the column to text for these, so enum columns take any text.
_TEXT_CAST_COMPARATORS = frozenset({"like", "ilike", "startsWith", "endsWith"})


def _leaf_type(path: list[str], obj: ObjectDef) -> str:
    name = path[0]
    joins = obj.join_columns()
    if name in joins:
        if len(path) > 1:
            raise unknown_field(obj.name_singular, ".".join(path))
        return "UUID"
    f = obj.field(name)
    if f is None:
        raise unknown_field(obj.name_singular, name)
    if f.type == "RELATION":
        hint = f" Use '{f.join_column}' instead." if f.join_column else ""
        raise bad_request(f"Filtering on relation field '{name}' is not supported.{hint}")
    if f.is_composite:
        if len(path) != 2 or path[1] not in COMPOSITE_TYPES[f.type]:
            sub = path[1] if len(path) > 1 else ""
            raise bad_request(f'Invalid subfield {sub} for {f.type.lower()} field "{name}"')
        sub_type = COMPOSITE_TYPES[f.type][path[1]]
        # Tag email subfields so the filter value is lower-cased like stored emails.
        return "EMAIL_TEXT" if f.type == "EMAILS" else sub_type
    if len(path) > 1:
        raise unknown_field(obj.name_singular, ".".join(path))
    return f.type


# find-postgres-default-null-equivalent-value.util: which columns have an empty value that the
# where-clause builder treats like NULL. '' for text, [] for arrays; per composite subfield.
_TEXT_SUBFIELDS = {
    "ACTOR": {"name"},
    "ADDRESS": {"addressStreet1", "addressStreet2", "addressCity", "addressState",
                "addressPostcode", "addressCountry"},
    "EMAILS": {"primaryEmail"},
    "LINKS": {"primaryLinkUrl", "primaryLinkLabel"},
    "PHONES": {"primaryPhoneNumber", "primaryPhoneCountryCode", "primaryPhoneCallingCode"},
    "RICH_TEXT": {"markdown"},
    "FULL_NAME": {"firstName", "lastName"},
}
_ARRAY_SUBFIELDS = {"EMAILS": {"additionalEmails"}, "LINKS": {"secondaryLinks"},
                    "PHONES": {"additionalPhones"}}


def _null_equivalent(path: list[str], obj: ObjectDef) -> Any:
    f = obj.field(path[0])
    if f is None or f.type == "RELATION":
        return None
    if len(path) == 1:
        return "" if f.type == "TEXT" else [] if f.type in ("ARRAY", "MULTI_SELECT") else None
    if path[1] in _TEXT_SUBFIELDS.get(f.type, ()):
        return ""
    if path[1] in _ARRAY_SUBFIELDS.get(f.type, ()):
        return []
    return None


def _strip_quotes(value: str) -> str:
    if len(value) >= 2 and value[0] in "\"'" and value[-1] in "\"'":
        return value[1:-1]
    return value


def _cast_value(cond: Condition, obj: ObjectDef) -> Any:
    raw = cond.raw
    if cond.comparator in ("in", "containsAny"):
        if not (raw.startswith("[") and raw.endswith("]")):
            raise bad_request(
                f"'filter' invalid for '{cond.comparator}' operator. Received '{raw}' but array "
                f"value expected eg: 'field[{cond.comparator}]:[value_1,value_2]'")
        # format-field-values.util: a plain split on every comma, quotes or not, and no
        # trimming; each piece loses its quotes only if it starts and ends with one.
        return [_cast_one(item, cond) for item in raw[1:-1].split(",")]
    if cond.comparator == "is":
        value = _strip_quotes(raw).upper()
        if value not in ("NULL", "NOT_NULL"):
            raise bad_request(f"'filter' invalid for 'is' operator. Received '{raw}' but "
                              "NULL or NOT_NULL expected")
        return value
    return _cast_one(raw, cond)


def _cast_one(raw: str, cond: Condition) -> Any:
    text = _strip_quotes(raw)
    kind = cond.leaf_type
    if kind in _NUMERIC_TYPES:
        try:
            return float(text)
        except ValueError:
            raise bad_request(f'invalid input syntax for type numeric: "{text}"') from None
    if kind == "BOOLEAN":
        return text.lower() == "true"
    if kind == "DATE_TIME":
        ms = parse_iso_ms(text)
        if ms is None:
            raise bad_request(f'invalid input syntax for type timestamp with time zone: "{text}"')
        return ms
    if kind == "EMAIL_TEXT" and cond.comparator in ("eq", "neq", "in"):
        return text.strip().lower()
    if kind == "UUID":
        return text.lower()
    return text


# --------------------------------------------------------------------------------------------
# Evaluation


def mentions_deleted_at(node: Node) -> bool:
    if isinstance(node, Conjunction):
        return any(mentions_deleted_at(c) for c in node.children)
    return node.path[0] == "deletedAt"


def evaluate(node: Node, record: dict[str, Any]) -> bool:
    """True when the filter holds for the record; false and unknown (NULL) both leave it out."""
    return truth(node, record) is True


def truth(node: Node, record: dict[str, Any]) -> bool | None:
    """SQL's three-valued logic: True, False or None (unknown)."""
    if isinstance(node, Conjunction):
        if node.kind == "not":
            inner = truth(node.children[0], record)
            return None if inner is None else not inner
        results = [truth(c, record) for c in node.children]
        decisive = node.kind == "or"  # True decides an or(), False decides an and()
        if decisive in results:
            return decisive
        return None if None in results else not decisive
    return _condition_truth(node, record)


def _record_value(cond: Condition, record: dict[str, Any]) -> Any:
    value = record.get(cond.path[0])
    if len(cond.path) == 2:
        value = value.get(cond.path[1]) if isinstance(value, dict) else None
    if value is None:
        return None
    if cond.leaf_type == "DATE_TIME" and isinstance(value, str):
        return _stored_ms(value)
    if cond.leaf_type in _NUMERIC_TYPES and not isinstance(value, bool):
        return float(value)
    if cond.leaf_type == "UUID" and isinstance(value, str):
        return value.lower()
    return value


# Rows of one batch write share one timestamp text, so a filter over a million rows parses a
# few thousand distinct values, not a million.
_stored_ms = functools.lru_cache(maxsize=1 << 16)(parse_iso_ms)


def _like(pattern: str, ignore_case: bool) -> Callable[[str], bool]:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    compiled = re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))
    return lambda s: compiled.fullmatch(s) is not None


def _targets_null_equivalent(cond: Condition) -> bool:
    """Twenty adds `OR col IS NULL` (eq, like) / `AND col IS NOT NULL` (neq) when the filter
    value itself is the column's empty value, or the text NULL."""
    if cond.null_equivalent is None:
        return False
    target = cond.value
    return target == "NULL" or target == cond.null_equivalent or (
        cond.null_equivalent == [] and target == "[]")


def _condition_truth(cond: Condition, record: dict[str, Any]) -> bool | None:
    value = _record_value(cond, record)
    target = cond.value
    op = cond.comparator
    if op == "is":
        if target == "NOT_NULL":
            return value is not None  # plain IS NOT NULL: an empty '' counts as a value
        return value is None or (cond.null_equivalent is not None
                                 and value == cond.null_equivalent)
    if value is None and op in ("eq", "neq", "like", "ilike") and _targets_null_equivalent(cond):
        return op != "neq"  # `... OR col IS NULL` holds; `... AND col IS NOT NULL` fails
    if value is None:
        return None  # SQL: any comparison with NULL is unknown
    return _compare(cond, value)


def _compare(cond: Condition, value: Any) -> bool:
    target = cond.value
    op = cond.comparator
    try:
        if op == "eq":
            return bool(value == target)
        if op == "neq":
            return bool(value != target)
        if op == "gt":
            return bool(value > target)
        if op == "gte":
            return bool(value >= target)
        if op == "lt":
            return bool(value < target)
        if op == "lte":
            return bool(value <= target)
    except TypeError:
        raise bad_request(f"Cannot compare field '{'.'.join(cond.path)}' with "
                          f"'{cond.raw}'") from None
    if op == "in":
        return value in target
    if op == "containsAny":
        return isinstance(value, list) and any(t in value for t in target)
    text = str(value)
    if op == "startsWith":
        return text.startswith(str(target))
    if op == "endsWith":
        return text.endswith(str(target))
    if op == "like":
        return _like(str(target), ignore_case=False)(text)
    if op == "ilike":
        return _like(str(target), ignore_case=True)(text)
    raise bad_request(f"comparator {op} is not supported")
