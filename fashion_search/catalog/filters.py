"""Metadata filters: ``{"articleType": "Shirts", "baseColour": ["Navy Blue", "Blue"]}`` to SQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from psycopg import sql
from pydantic.alias_generators import to_camel

from fashion_search.catalog.limits import MAX_FILTER_VALUE_CHARS, MAX_INTEGER, MIN_INTEGER
from fashion_search.catalog.models import FILTER_FIELDS
from fashion_search.errors import InvalidFilterError

FilterValue: TypeAlias = str | int | Sequence[str | int]
Filters: TypeAlias = Mapping[str, FilterValue]

#: Accepted filter names (snake_case and the dataset's camelCase) -> column.
FILTER_COLUMNS: dict[str, str] = {
    **{name: name for name in FILTER_FIELDS},
    **{to_camel(name): name for name in FILTER_FIELDS},
}
MAX_VALUES_PER_FIELD = 100


def _check_value(field: str, value: object, integer: bool) -> str | int:
    if integer:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InvalidFilterError(f"filter {field!r} needs an integer, got {value!r}")
        try:
            number = int(value)
        except ValueError as error:
            raise InvalidFilterError(f"filter {field!r} needs an integer, got {value!r}") from error
        if not MIN_INTEGER <= number <= MAX_INTEGER:
            raise InvalidFilterError(
                f"filter {field!r} needs an integer from {MIN_INTEGER} to {MAX_INTEGER}"
            )
        return number
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FILTER_VALUE_CHARS:
        raise InvalidFilterError(
            f"filter {field!r} needs a string of 1 to {MAX_FILTER_VALUE_CHARS} characters,"
            f" got {value!r}"
        )
    if "\x00" in value:
        raise InvalidFilterError(f"filter {field!r} must not contain NUL characters")
    return value


def where_clause(
    filters: Filters | None, alias: str | None = None
) -> tuple[sql.Composable, dict[str, Any]]:
    """``TRUE AND col = %(f_col)s AND col2 = ANY(%(f_col2)s)`` and its parameters (the columns
    of the table ``alias`` when given).

    Values are always bound as parameters, never spliced into the SQL text. Raises
    InvalidFilterError for an unknown field or an unusable value.
    """
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {}
    for field, raw in (filters or {}).items():
        column = FILTER_COLUMNS.get(field)
        if column is None:
            known = ", ".join(sorted(to_camel(n) for n in FILTER_FIELDS))
            raise InvalidFilterError(f"unknown filter field {field!r}; known fields: {known}")
        integer = FILTER_FIELDS[column] is int
        name = f"f_{column}"
        identifier = sql.Identifier(column) if alias is None else sql.Identifier(alias, column)
        if name in params:
            raise InvalidFilterError(f"filter {field!r} is given twice (camelCase and snake_case)")
        if isinstance(raw, str | int):
            params[name] = _check_value(field, raw, integer)
            parts.append(sql.SQL("{} = {}").format(identifier, sql.Placeholder(name)))
            continue
        values = [_check_value(field, v, integer) for v in raw]
        if not values or len(values) > MAX_VALUES_PER_FIELD:
            raise InvalidFilterError(
                f"filter {field!r} needs 1 to {MAX_VALUES_PER_FIELD} values, got {len(values)}"
            )
        params[name] = values
        cast = sql.SQL("integer[]" if integer else "text[]")
        parts.append(sql.SQL("{} = ANY({}::{})").format(identifier, sql.Placeholder(name), cast))
    return sql.SQL(" AND ").join(parts), params


def filter_values(value: FilterValue) -> list[str | int]:
    """A filter's value or values, as a list."""
    return [value] if isinstance(value, str | int) else list(value)


def check_filters(filters: Filters | None) -> None:
    """InvalidFilterError for an unknown field or an unusable value (before any work)."""
    where_clause(filters)
