-- Full-text search on product titles (the lexical half of hybrid search).
ALTER TABLE products ADD COLUMN title_search tsvector
    GENERATED ALWAYS AS (to_tsvector('english', product_display_name)) STORED;

CREATE INDEX products_title_search ON products USING gin (title_search);
CREATE INDEX products_model_version ON products (model_version);
