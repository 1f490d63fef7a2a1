"""One result per style: colour variants of a product grouped under its best-ranked one.

Two products are variants of one style when they have the same article type and the same
title words once colour words (the words of the catalog's base colours) and gender words are
removed ("Puma Men Grey T-shirt" and "Puma Women Black T-shirt" are ``puma tshirt``), and their
colours differ: a product in a colour its style already shows stays a result of its own (a
generic title such as "Catwalk Women Black Heels" names many different products). On the whole
catalog this makes 24,857 groups of 44,072 products, 7,955 of them with two colours or more
(``python -m bench.merchandising``; docs/decisions/0045).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from fashion_search.catalog.models import Product
from fashion_search.search.words import singular, words

T = TypeVar("T")

#: Words that name who a product is for (removed from titles with colour words).
GENDER_WORDS = frozenset(
    {"men", "mens", "man", "women", "womens", "woman", "boys", "boy", "girls", "girl",
     "unisex", "kids", "kid"}
)  # fmt: skip


def colour_words(colours: Iterable[str | int]) -> frozenset[str]:
    """The words of the catalog's base colours (``Navy Blue`` gives ``navy`` and ``blue``)."""
    return frozenset(w for colour in colours for w in words(str(colour)))


def style_key(product: Product, colours: frozenset[str]) -> tuple[str, str]:
    """A product's style: its article type, and the words of its title but colour and gender
    words, in the singular, in alphabetical order ("Polo Grey TShirt" is "Grey Polo Tshirt")."""
    title = {singular(w) for w in words(product.product_display_name)} - colours - GENDER_WORDS
    return product.article_type or "", " ".join(sorted(title))


def group_by_style(
    items: Sequence[T], product: Callable[[T], Product], colours: frozenset[str]
) -> list[tuple[T, list[T]]]:
    """Each item that starts a style group, in the order given, with the variants after it
    (other colours of its style)."""
    groups: list[tuple[T, list[T]]] = []
    shown: dict[tuple[str, str], list[tuple[set[str | None], list[T]]]] = {}
    for item in items:
        p = product(item)
        styles = shown.setdefault(style_key(p, colours), [])
        group = next((g for g in styles if p.base_colour not in g[0]), None)
        if group is None:  # the first of its style, or a colour the style already shows
            variants: list[T] = []
            styles.append(({p.base_colour}, variants))
            groups.append((item, variants))
        else:
            group[0].add(p.base_colour)
            group[1].append(item)
    return groups
