"""Completions of what a shopper is typing: attribute values and product titles that start
with the prefix, then (one typo) attribute values whose start is one edit away from it.

They come from the ``suggestions`` materialized view (migration 0008): prefix matches through
a ``text_pattern_ops`` index, near misses by ``levenshtein`` over the few hundred attribute
values (titles are left out of it: a common word such as "women" is in half of them, and
checking each took 150 ms; docs/decisions/0036). :meth:`SuggestionRepository.refresh`
rebuilds the view after a catalog load.
"""

from __future__ import annotations

from dataclasses import dataclass

from fashion_search.catalog.limits import check_prefix, check_suggestion_limit
from fashion_search.catalog.table import Table

#: Shortest prefix the typo-tolerant lookup runs for (shorter ones have too many near misses).
MIN_FUZZY_CHARS = 3

_PREFIX = """
SELECT phrase, kind FROM suggestions WHERE folded LIKE %(pattern)s
ORDER BY kind = 'title', weight DESC, phrase LIMIT %(limit)s
"""
# The prefix against the first n - 1, n and n + 1 characters of the phrase: one edit anywhere in
# the prefix (an insertion, deletion or substitution) is allowed.
_NEAR = """
SELECT phrase, kind FROM suggestions
WHERE kind <> 'title' AND NOT folded LIKE %(pattern)s
  AND least(levenshtein(%(folded)s, left(folded, %(n)s - 1)),
            levenshtein(%(folded)s, left(folded, %(n)s)),
            levenshtein(%(folded)s, left(folded, %(n)s + 1))) <= 1
ORDER BY weight DESC, phrase LIMIT %(limit)s
"""


@dataclass(frozen=True)
class Suggestion:
    """A completion and what it is: a metadata field's camelCase name, or ``title``."""

    text: str
    kind: str


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


class SuggestionRepository(Table):
    """Completions from the catalog's titles and attribute vocabulary."""

    def suggest(self, prefix: str, limit: int = 8) -> list[Suggestion]:
        """Up to ``limit`` completions of ``prefix`` (case-insensitive): attribute values
        first, then titles, each by how many products have them; attribute values one edit
        away fill the rest; each text once. InvalidArgumentError for an empty or too long
        prefix or a bad limit."""
        check_prefix(prefix)
        check_suggestion_limit(limit)
        folded = " ".join(prefix.lower().split())
        params = {"pattern": _like_prefix(folded), "folded": folded, "limit": limit}
        with self.pool.connection() as conn:
            rows = conn.execute(_PREFIX, params).fetchall()
            if len(rows) < limit and len(folded) >= MIN_FUZZY_CHARS:
                near = {**params, "n": len(folded), "limit": limit - len(rows)}
                rows += conn.execute(_NEAR, near).fetchall()
        unique: dict[str, Suggestion] = {}  # Watches is an article type and a sub-category
        for text, kind in rows:
            unique.setdefault(text.lower(), Suggestion(text, kind))
        return list(unique.values())

    def refresh(self) -> None:
        """Rebuild the completions from the products now stored (the catalog owner only)."""
        with self.pool.connection() as conn:
            conn.execute("REFRESH MATERIALIZED VIEW suggestions")
