"""Build the judged queries (``fashion_search/learning/judged_queries.jsonl``) from the catalog
by rules, deterministically: ``python -m bench.judged_build``.

Each group is a set of templates instantiated over the catalog's combinations of values that
have at least :data:`MIN_RELEVANT` products, sampled with a fixed seed; no query is tuned by
hand. Words are drawn from tables here (shoppers' genders, synonyms, Spanish, patterns,
occasions, brands read from titles), not from the search's lexicon, though many words are
necessarily the same: the groups measure whether the search understands such words, the
held-out sets of the issue whether it generalises.
"""

from __future__ import annotations

import argparse
import random
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from fashion_search.catalog.models import ProductFields
from fashion_search.dataset import iter_dataset
from fashion_search.learning.judged_queries import JUDGED_QUERIES, JudgedQuery
from fashion_search.settings import get_settings

MIN_RELEVANT = 10
PER_GROUP = {
    "attribute": 60, "attribute-shopper": 60, "synonym": 60, "brand": 50, "pattern": 40,
    "occasion": 50, "typo": 50, "spanish": 60, "description": 40,
}  # fmt: skip
SHOPPER_GENDERS = {
    "Men": ["men", "men's", "mens", "man", "guys"],
    "Women": ["women", "women's", "womens", "woman", "ladies"],
    "Boys": ["boys", "boy"],
    "Girls": ["girls", "girl"],
}
SYNONYMS: list[tuple[str, list[str]]] = [
    ("sneakers", ["Casual Shoes", "Sports Shoes"]), ("trainers", ["Casual Shoes", "Sports Shoes"]),
    ("running shoes", ["Sports Shoes"]), ("hoodie", ["Sweatshirts"]), ("jumper", ["Sweaters"]),
    ("pullover", ["Sweaters"]), ("cardigan", ["Sweaters"]), ("pants", ["Trousers"]),
    ("chinos", ["Trousers"]), ("joggers", ["Track Pants"]), ("sweatpants", ["Track Pants"]),
    ("tee", ["Tshirts"]), ("polo shirt", ["Tshirts"]), ("purse", ["Handbags"]),
    ("tote bag", ["Handbags"]), ("shades", ["Sunglasses"]), ("wristwatch", ["Watches"]),
    ("frock", ["Dresses"]), ("blouse", ["Tops"]), ("slippers", ["Flip Flops"]),
    ("stilettos", ["Heels"]), ("coat", ["Jackets"]), ("cologne", ["Perfume and Body Mist"]),
    ("fragrance", ["Perfume and Body Mist"]), ("deo", ["Deodorant"]),
    ("necklace", ["Necklace and Chains"]), ("rucksack", ["Backpacks"]), ("denims", ["Jeans"]),
    ("tank top", ["Tops"]), ("ballet flats", ["Flats"]), ("billfold", ["Wallets"]),
    ("nightwear", ["Night suits", "Nightdress"]), ("underwear", ["Briefs", "Trunk", "Boxers"]),
]  # fmt: skip
COLOUR_SYNONYMS = {"Navy Blue": "navy", "Grey": "gray", "Gold": "golden", "Off White": "ivory"}
PATTERNS = [("striped", "stripe"), ("checked", "check"), ("printed", "print"),
            ("solid", "solid"), ("floral", "floral"), ("embroidered", "embroider")]  # fmt: skip
OCCASIONS: list[tuple[str, str, str]] = [  # template, field, value
    ("office {a} for {g}", "usage", "Formal"), ("{a} for the gym for {g}", "usage", "Sports"),
    ("{a} for a wedding for {g}", "usage", "Ethnic"), ("party {a} for {g}", "usage", "Party"),
    ("summer {a} for {g}", "season", "Summer"), ("winter {a} for {g}", "season", "Winter"),
    ("{a} for sports for {g}", "usage", "Sports"), ("autumn {a} for {g}", "season", "Fall"),
]  # fmt: skip
SPANISH_GENDERS = {"Men": "hombre", "Women": "mujer", "Boys": "niño", "Girls": "niña"}
SPANISH_ARTICLES: dict[str, tuple[str, str]] = {  # article type -> (words, gender+number)
    "Dresses": ("vestido", "ms"), "Shirts": ("camisa", "fs"), "Tshirts": ("camiseta", "fs"),
    "Tops": ("blusa", "fs"), "Trousers": ("pantalones", "mp"), "Jeans": ("vaqueros", "mp"),
    "Shorts": ("pantalones cortos", "mp"), "Skirts": ("falda", "fs"),
    "Casual Shoes": ("zapatos", "mp"), "Sports Shoes": ("zapatillas", "fp"),
    "Heels": ("tacones", "mp"), "Sandals": ("sandalias", "fp"), "Handbags": ("bolso", "ms"),
    "Wallets": ("cartera", "fs"), "Backpacks": ("mochila", "fs"), "Watches": ("reloj", "ms"),
    "Sunglasses": ("gafas de sol", "fp"), "Belts": ("cinturón", "ms"),
    "Socks": ("calcetines", "mp"), "Jackets": ("chaqueta", "fs"),
    "Sweatshirts": ("sudadera", "fs"), "Sweaters": ("jersey", "ms"),
    "Earrings": ("pendientes", "mp"), "Flip Flops": ("chanclas", "fp"), "Caps": ("gorra", "fs"),
    "Kurtas": ("kurta", "fs"), "Track Pants": ("pantalones deportivos", "mp"),
}  # fmt: skip
SPANISH_COLOURS: dict[str, dict[str, str]] = {
    "Red": {"ms": "rojo", "fs": "roja", "mp": "rojos", "fp": "rojas"},
    "Black": {"ms": "negro", "fs": "negra", "mp": "negros", "fp": "negras"},
    "White": {"ms": "blanco", "fs": "blanca", "mp": "blancos", "fp": "blancas"},
    "Blue": {"ms": "azul", "fs": "azul", "mp": "azules", "fp": "azules"},
    "Green": {"ms": "verde", "fs": "verde", "mp": "verdes", "fp": "verdes"},
    "Yellow": {"ms": "amarillo", "fs": "amarilla", "mp": "amarillos", "fp": "amarillas"},
    "Pink": {"ms": "rosa", "fs": "rosa", "mp": "rosas", "fp": "rosas"},
    "Grey": {"ms": "gris", "fs": "gris", "mp": "grises", "fp": "grises"},
    "Brown": {"ms": "marrón", "fs": "marrón", "mp": "marrones", "fp": "marrones"},
    "Purple": {"ms": "morado", "fs": "morada", "mp": "morados", "fp": "moradas"},
    "Orange": {"ms": "naranja", "fs": "naranja", "mp": "naranjas", "fp": "naranjas"},
    "Navy Blue": {"ms": "azul marino", "fs": "azul marino", "mp": "azul marino",
                  "fp": "azul marino"},
    "Silver": {"ms": "plateado", "fs": "plateada", "mp": "plateados", "fp": "plateadas"},
    "Gold": {"ms": "dorado", "fs": "dorada", "mp": "dorados", "fp": "doradas"},
}  # fmt: skip
WARM = ["Sweaters", "Sweatshirts", "Jackets", "Blazers", "Rain Jacket", "Tracksuits", "Mufflers",
        "Scarves", "Gloves", "Shrug", "Waistcoat", "Nehru Jackets", "Stoles"]  # fmt: skip
SLEEP = ["Night suits", "Nightdress", "Lounge Pants", "Lounge Shorts", "Lounge Tshirts",
         "Baby Dolls", "Bath Robe", "Robe"]  # fmt: skip
DESCRIPTIONS: list[tuple[str, dict[str, list[str]], bool]] = [  # template, rule, per gender
    ("something warm for winter for {g}", {"article_type": WARM}, True),
    ("something warm to wear when it is cold", {"article_type": WARM}, False),
    ("comfortable shoes for running for {g}", {"article_type": ["Sports Shoes"]}, True),
    ("a bag to carry my laptop", {"article_type": ["Laptop Bag", "Backpacks", "Messenger Bag"]},
     False),
    ("something to keep the sun out of my eyes", {"article_type": ["Sunglasses"]}, False),
    ("an outfit for a wedding for {g}", {"usage": ["Ethnic"], "master_category": ["Apparel"]},
     True),
    ("clothes to wear to the office for {g}",
     {"usage": ["Formal"], "master_category": ["Apparel"]}, True),
    ("a watch as a gift for {g}", {"article_type": ["Watches"]}, True),
    ("shoes to wear with a suit for {g}", {"article_type": ["Formal Shoes"]}, True),
    ("something comfortable to sleep in for {g}", {"article_type": SLEEP}, True),
    ("clothes for the gym for {g}", {"usage": ["Sports"], "master_category": ["Apparel"]}, True),
    ("something to hold my money and cards", {"article_type": ["Wallets"]}, False),
    ("jewellery for {g}", {"sub_category": ["Jewellery"]}, True),
    ("a nice smell for {g}", {"article_type": ["Perfume and Body Mist", "Deodorant"]}, True),
    ("a bag for a weekend trip", {"article_type": ["Duffel Bag", "Trolley Bag", "Backpacks",
                                                   "Rucksacks"]}, False),
    ("light clothes for hot summer days for {g}",
     {"season": ["Summer"], "master_category": ["Apparel"]}, True),
    ("shoes for everyday wear for {g}", {"article_type": ["Casual Shoes", "Flats", "Sandals"]},
     True),
    ("a top to wear with jeans for {g}", {"article_type": ["Tshirts", "Tops", "Shirts"]}, True),
    ("something for my wrist for {g}", {"article_type": ["Watches", "Bracelet", "Bangle",
                                                         "Wristbands"]}, True),
    ("traditional indian wear for {g}", {"usage": ["Ethnic"]}, True),
    ("makeup for the lips", {"article_type": ["Lipstick", "Lip Gloss", "Lip Liner", "Lip Care",
                                              "Lip Plumper"]}, False),
    ("a belt to go with formal trousers for {g}", {"article_type": ["Belts"]}, True),
]  # fmt: skip

Combo = tuple[str, str, str]  # gender, colour, article type


def singular_words(article: str) -> str:
    """An article type as a shopper writes one of it: "tshirt", "casual shoe", "jeans"."""
    lowered = article.lower()
    if lowered.endswith(("shorts", "jeans", "trousers", "briefs", "capris", "tights", "boxers")):
        return lowered
    if lowered.endswith(("ches", "shes", "sses", "xes")):
        return lowered[:-2]
    return lowered[:-1] if lowered.endswith("s") and not lowered.endswith("ss") else lowered


def _attribute_rule(g: str, c: str | None, a: str | list[str]) -> dict[str, list[str]]:
    rule = {"gender": [g], "article_type": [a] if isinstance(a, str) else a}
    return rule | ({"base_colour": [c]} if c else {})


def typo(word: str, rng: random.Random) -> str:
    """``word`` with one edit a hurried shopper makes: a letter dropped, doubled, or two
    neighbours swapped (never the first letter)."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(["drop", "double", "swap"])
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :] if word[i] != word[i + 1] else word


def brands(products: list[ProductFields], at_least: int = 60) -> dict[str, str]:
    """Brands read from titles: the words before the first that varies among the titles that
    start alike (lower case -> as written)."""
    first = Counter(p.product_display_name.split()[0] for p in products if p.product_display_name)
    found: dict[str, str] = {}
    for word, n in first.items():
        if n < at_least or not word[:1].isupper() or not word.isalpha():
            continue
        titles = [p.product_display_name.split() for p in products
                  if p.product_display_name.startswith(word + " ")]  # fmt: skip
        name = [word]
        while True:
            nxt = Counter(t[len(name)] for t in titles if len(t) > len(name))
            top, count = nxt.most_common(1)[0] if nxt else ("", 0)
            if count < 0.9 * len(titles) or not top[:1].isalpha():
                break
            name.append(top)
        found[" ".join(name).lower()] = " ".join(name)
    return found


def build(products: list[ProductFields], seed: int = 0) -> Iterator[JudgedQuery]:
    """Every group's queries."""
    rng = random.Random(seed)
    combos = Counter(
        (p.gender, p.base_colour, p.article_type)
        for p in products
        if p.gender in SHOPPER_GENDERS and p.base_colour and p.article_type
    )
    common = sorted(c for c, n in combos.items() if n >= MIN_RELEVANT)
    by_ga = Counter((p.gender, p.article_type) for p in products if p.gender in SHOPPER_GENDERS)

    def sample(items: list[Any], group: str) -> list[Any]:
        return rng.sample(items, min(PER_GROUP[group], len(items)))

    for g, c, a in sample(common, "attribute"):
        yield JudgedQuery(text=rng.choice([f"{c} {a} for {g}", f"{g} {c} {a}"]),
                          group="attribute", fields=_attribute_rule(g, c, a))  # fmt: skip
    shopper = sample(common, "attribute-shopper")
    for g, c, a in shopper:
        gw, aw = rng.choice(SHOPPER_GENDERS[g]), rng.choice([singular_words(a), a.lower()])
        text = rng.choice([f"a {c.lower()} {aw} for {gw}", f"{gw} {c.lower()} {aw}",
                           f"{c.lower()} {aw} {gw}"])  # fmt: skip
        yield JudgedQuery(text=text, group="attribute-shopper", fields=_attribute_rule(g, c, a))
    synonym_queries = []
    for word, articles in SYNONYMS:
        for g in SHOPPER_GENDERS:
            if sum(by_ga[(g, a)] for a in articles) >= MIN_RELEVANT:
                synonym_queries.append((f"{word} for {rng.choice(SHOPPER_GENDERS[g])}",
                                        _attribute_rule(g, None, articles)))  # fmt: skip
    for g, c, a in common:
        if c in COLOUR_SYNONYMS:
            text = f"{COLOUR_SYNONYMS[c]} {singular_words(a)} for {rng.choice(SHOPPER_GENDERS[g])}"
            synonym_queries.append((text, _attribute_rule(g, c, a)))
    for text, rule in sample(synonym_queries, "synonym"):
        yield JudgedQuery(text=text, group="synonym", fields=rule)
    brand_queries = []
    named = brands(products)
    for lowered, brand in named.items():
        of_brand = Counter((p.gender, p.article_type) for p in products
                           if p.product_display_name.startswith(brand + " ")
                           and p.gender in SHOPPER_GENDERS)  # fmt: skip
        for (g, a), n in of_brand.items():
            if n >= MIN_RELEVANT:
                text = f"{lowered} {rng.choice([singular_words(a), a.lower()])} for " + rng.choice(
                    SHOPPER_GENDERS[str(g)]
                )
                brand_queries.append(JudgedQuery(text=text, group="brand",
                                                 fields=_attribute_rule(str(g), None, str(a)),
                                                 title_words=lowered.split()))  # fmt: skip
    yield from sample(brand_queries, "brand")
    pattern_queries = []
    for word, stem in PATTERNS:
        having = Counter((p.gender, p.article_type) for p in products
                         if p.gender in SHOPPER_GENDERS
                         and re.search(rf"\b{stem}", p.product_display_name.lower()))  # fmt: skip
        for (g, a), n in having.items():
            if n >= MIN_RELEVANT:
                text = f"{word} {singular_words(str(a))} for {rng.choice(SHOPPER_GENDERS[str(g)])}"
                pattern_queries.append(JudgedQuery(text=text, group="pattern",
                                                   fields=_attribute_rule(str(g), None, str(a)),
                                                   title_words=[stem]))  # fmt: skip
    yield from sample(pattern_queries, "pattern")
    occasion_queries = []
    for template, name, value in OCCASIONS:
        having = Counter((p.gender, p.article_type) for p in products
                         if p.gender in SHOPPER_GENDERS and getattr(p, name) == value)  # fmt: skip
        for (g, a), n in having.items():
            if n >= MIN_RELEVANT:
                text = template.format(a=singular_words(str(a)),
                                       g=rng.choice(SHOPPER_GENDERS[str(g)]))  # fmt: skip
                occasion_queries.append(JudgedQuery(
                    text=text, group="occasion",
                    fields=_attribute_rule(str(g), None, str(a)) | {name: [value]},
                ))  # fmt: skip
    yield from sample(occasion_queries, "occasion")
    for g, c, a in sample(common, "typo"):
        words = [*c.lower().split(), *singular_words(a).split()]
        at = rng.choice([i for i, w in enumerate(words) if len(w) >= 4] or [0])
        words[at] = typo(words[at], rng) if len(words[at]) >= 3 else words[at]
        text = f"{' '.join(words)} for {rng.choice(SHOPPER_GENDERS[g])}"
        yield JudgedQuery(text=text, group="typo", fields=_attribute_rule(g, c, a))
    spanish = [(g, c, a) for g, c, a in common if c in SPANISH_COLOURS and a in SPANISH_ARTICLES]
    for g, c, a in sample(spanish, "spanish"):
        article, form = SPANISH_ARTICLES[a]
        colour = SPANISH_COLOURS[c][form]
        if rng.random() < 0.7:
            text, rule = f"{article} {colour} para {SPANISH_GENDERS[g]}", _attribute_rule(g, c, a)
        else:
            text, rule = f"{article} {colour}", {"article_type": [a], "base_colour": [c]}
        yield JudgedQuery(text=text, group="spanish", fields=rule)
    described = []
    for template, rule, per_gender in DESCRIPTIONS:
        for g in ("Men", "Women") if per_gender else ("",):
            fields = rule | ({"gender": [g, "Unisex"]} if g else {})
            gw = rng.choice(SHOPPER_GENDERS[g]) if g else ""
            described.append(JudgedQuery(text=template.format(g=gw), group="description",
                                         fields=fields))  # fmt: skip
    yield from sample(described, "description")


def main() -> None:
    """Write the judged queries (those with at least MIN_RELEVANT relevant products)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    products = [item.fields for item in iter_dataset(get_settings().dataset_source)]
    kept, seen = [], set()
    for query in build(products, args.seed):
        if query.text in seen:
            continue
        if sum(query.relevant(p) for p in products) >= MIN_RELEVANT:
            kept.append(query)
            seen.add(query.text)
    JUDGED_QUERIES.write_text("".join(q.model_dump_json() + "\n" for q in kept))
    groups = Counter(q.group for q in kept)
    print(f"{len(kept)} judged queries written to {JUDGED_QUERIES}: {dict(groups)}")


if __name__ == "__main__":
    main()
