-- Search features: image fingerprints for collapse, and the suggestions shoppers see while typing.

-- Each product's image shrunk to 8 x 8 RGB (fashion_search/model/fingerprint.py); NULL until
-- a load (`load --skip-existing` backfills it) or an upload computes it.
ALTER TABLE products ADD COLUMN image_fingerprint bytea;

CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;  -- levenshtein, for one typo

-- Completions: every attribute value (weighted by how many products have it) and every product
-- title, lower-cased for matching. Refreshed after each catalog load (catalog/suggestions.py).
CREATE MATERIALIZED VIEW suggestions AS
    SELECT phrase, kind, count(*)::integer AS weight, lower(phrase) AS folded
    FROM (
        SELECT article_type AS phrase, 'articleType' AS kind FROM products
        UNION ALL SELECT base_colour, 'baseColour' FROM products
        UNION ALL SELECT sub_category, 'subCategory' FROM products
        UNION ALL SELECT master_category, 'masterCategory' FROM products
        UNION ALL SELECT gender, 'gender' FROM products
        UNION ALL SELECT season, 'season' FROM products
        UNION ALL SELECT usage, 'usage' FROM products
        UNION ALL SELECT product_display_name, 'title' FROM products
    ) values_of_products
    WHERE phrase IS NOT NULL AND phrase <> ''
    GROUP BY phrase, kind;

CREATE UNIQUE INDEX suggestions_phrase ON suggestions (kind, phrase);
CREATE INDEX suggestions_prefix ON suggestions (folded text_pattern_ops);
CREATE INDEX suggestions_values ON suggestions (weight) WHERE kind <> 'title';

GRANT SELECT ON suggestions TO fashion_api;
