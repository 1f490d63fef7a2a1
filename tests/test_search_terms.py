"""The search features' pure parts: query terms, query understanding, facet counts and
collapse of near-identical images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fashion_search.catalog.models import Product
from fashion_search.errors import InvalidArgumentError
from fashion_search.model.fingerprint import fingerprint_bytes
from fashion_search.search.collapse import collapse
from fashion_search.search.facets import FacetCount, count_facets
from fashion_search.search.terms import NEGATIVE_WEIGHT, Term, check_terms, combine, parse_query
from fashion_search.search.understanding import Vocabulary, lexicon, one_edit_apart
from tests.helpers import jpeg


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("summer dress -red -long", [Term("summer dress"), Term("red", NEGATIVE_WEIGHT),
                                     Term("long", NEGATIVE_WEIGHT)]),
        ('shirt -"long sleeve"', [Term("shirt"), Term("long sleeve", NEGATIVE_WEIGHT)]),
        ("blue t-shirt", [Term("blue t-shirt")]),  # a hyphen inside a word is not negation
        ("-red", [Term("red", NEGATIVE_WEIGHT)]),
    ],
)  # fmt: skip
def test_a_query_string_parses_into_weighted_terms(query: str, terms: list[Term]) -> None:
    assert parse_query(query) == terms


@pytest.mark.parametrize(
    "terms",
    [
        [],
        [Term("red", -0.5)],  # nothing to look for
        [Term("shirt"), Term("  ", -0.5)],
        [Term("shirt", float("nan"))],
        [Term("shirt", float("inf"))],
        [Term("shirt", 11.0)],
        [Term("shirt", "1")],  # type: ignore[arg-type]
        [Term("shirt", True)],
        [Term("x" * 78)],
        [Term("shirt")] * 11,
    ],
)
def test_bad_terms_are_refused(terms: list[Term]) -> None:
    with pytest.raises(InvalidArgumentError):
        check_terms(terms, max_chars=77)


def test_terms_combine_into_the_unit_weighted_sum() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.6, 0.8])
    combined = combine(np.stack([a, b]), [1.0, -0.5])
    expected = (a - 0.5 * b) / np.linalg.norm(a - 0.5 * b)
    assert np.allclose(combined, expected) and np.isclose(np.linalg.norm(combined), 1.0)
    with pytest.raises(InvalidArgumentError, match="cancel out"):
        combine(np.stack([a, a]), [1.0, -1.0])


VOCABULARY = Vocabulary.of(
    {
        "gender": ["Men", "Women", "Boys", "Girls"],
        "baseColour": ["Navy Blue", "Blue", "Pink", "Grey", "Red", "Black"],
        "articleType": ["Shirts", "Tshirts", "Jeans", "Watches", "Dresses", "Casual Shoes",
                        "Sports Shoes", "Shorts"],
        "season": ["Summer", "Fall", "Winter"],
        "usage": ["Casual", "Sports", "Party", "Formal"],
        "masterCategory": ["Apparel"],  # not an understood field
    },
    title_words={"short": 40, "shirt": 900, "shorts": 300, "sleeve": 120, "nike": 500},
)  # fmt: skip


@pytest.mark.parametrize(
    ("query", "understood"),
    [
        ("Navy Blue Shirts for Men", {"baseColour": "Navy Blue", "articleType": "Shirts",
                                      "gender": "Men"}),
        ("pink t-shirt womens", {"baseColour": "Pink", "articleType": "Tshirts",
                                 "gender": "Women"}),
        ("men's gray tee for autumn", {"gender": "Men", "baseColour": "Grey",
                                       "articleType": "Tshirts", "season": "Fall"}),
        ("blue jeans sporty boy", {"baseColour": "Blue", "articleType": "Jeans",
                                   "usage": "Sports", "gender": "Boys"}),
        ("apparel watch", {"articleType": "Watches"}),
        ("something else entirely", {}),
        # everyday synonyms, several values where the word names several
        ("sneakers for guys", {"articleType": ["Casual Shoes", "Sports Shoes"], "gender": "Men"}),
        ("navy tee for ladies", {"baseColour": "Navy Blue", "articleType": "Tshirts",
                                 "gender": "Women"}),
        ("gray frock for kids", {"baseColour": "Grey", "articleType": "Dresses",
                                 "gender": ["Boys", "Girls"]}),
        # occasions and seasons
        ("party wear for women", {"usage": "Party", "gender": "Women"}),
        ("office shirt", {"usage": "Formal", "articleType": "Shirts"}),
        ("something warm for winter", {"season": "Winter"}),
        ("running shoes", {"articleType": "Sports Shoes"}),  # the longer phrase wins
        # one-edit typos of vocabulary words; words of titles are no typos
        ("red tshrit for women", {"baseColour": "Red", "articleType": "Tshirts",
                                  "gender": "Women"}),
        ("blak jeans", {"baseColour": "Black", "articleType": "Jeans"}),
        ("short sleeve", {}),  # "short" is in titles: not a typo of "shirt"
        # Spanish
        ("vestido rojo", {"articleType": "Dresses", "baseColour": "Red"}),
        ("camisa azul para hombre", {"articleType": "Shirts", "baseColour": "Blue",
                                     "gender": "Men"}),
        ("zapatillas negras para niña", {"articleType": ["Sports Shoes", "Casual Shoes"],
                                         "baseColour": "Black", "gender": "Girls"}),
        ("pantalón corto de verano", {"articleType": "Shorts", "season": "Summer"}),
    ],
)  # fmt: skip
def test_query_understanding_names_catalog_values(query: str, understood: dict[str, str]) -> None:
    assert VOCABULARY.understand(query) == understood


@pytest.mark.parametrize(
    ("query", "rewritten"),
    [
        ("vestido rojo", "Dresses Red"),
        ("sneakers for men", "Casual Shoes for men"),  # the first value it names
        ("red tshrit for women", "red tshirt for women"),  # the typo read
        ("navy blue shirt", "navy blue shirt"),  # the catalog's own words stay
        ("nike tee", "nike Tshirts"),
        ("something else", "something else"),
    ],
)
def test_rewriting_puts_the_catalogs_words_for_the_shoppers(query: str, rewritten: str) -> None:
    assert VOCABULARY.rewrite(query) == rewritten


@pytest.mark.parametrize(
    ("a", "b", "near"),
    [("tshirt", "tshrit", True), ("shirt", "shirts", True), ("black", "blak", True),
     ("jeans", "jaens", True), ("watch", "wetch", True), ("shirt", "short", True),
     ("shirt", "shirt", False), ("shirt", "shrits", False), ("abcd", "abdx", False),
     ("dress", "drsesx", False)],
)  # fmt: skip
def test_one_edit_apart(a: str, b: str, near: bool) -> None:
    assert one_edit_apart(a, b) is near and one_edit_apart(b, a) is near


def test_the_lexicon_names_only_values_the_catalog_has(dataset_values: dict[str, set[str]]) -> None:
    for entry in lexicon():
        assert entry["words"] and all(w == w.lower() for w in entry["words"]), entry
        for field, values in entry.items():
            if field != "words":
                assert set(values) <= dataset_values[field], (entry, field)


def test_facets_count_each_value_most_frequent_first() -> None:
    products = [
        Product(id=i, product_display_name="x", image_key=f"{i}.jpg", gender=g, year=y)
        for i, (g, y) in enumerate([("Men", 2012), ("Women", 2012), ("Men", None)], start=1)
    ]
    counts = count_facets(products)
    assert counts["gender"] == [FacetCount("Men", 2), FacetCount("Women", 1)]
    assert counts["year"] == [FacetCount(2012, 2)]
    assert counts["baseColour"] == []


def _reencoded(data: bytes, **save: object) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).save(out, **save)  # type: ignore[arg-type]
    return out.getvalue()


def test_collapse_groups_identical_and_near_identical_images_only() -> None:
    navy = jpeg(60, 80, "navy")
    images = {
        "navy": navy,
        "copy": bytes(navy),
        "recompressed": _reencoded(navy, format="JPEG", quality=90),
        "png": _reencoded(navy, format="PNG"),
        "red": jpeg(60, 80, "red"),
    }
    prints = {name: fingerprint_bytes(data) for name, data in images.items()}
    kept = collapse([*images, "unprinted"], lambda name: prints.get(name))
    assert kept == [("navy", 4), ("red", 1), ("unprinted", 1)]
