-- Products created from merchant uploads (bucket events): where the upload came from, which
-- version of it was processed, and the confidence of each predicted label.
ALTER TABLE products
    ADD COLUMN source_bucket    text,
    ADD COLUMN source_key       text,
    ADD COLUMN source_etag      text,
    ADD COLUMN label_confidence jsonb,
    ADD CONSTRAINT products_source_complete
        CHECK ((source_bucket IS NULL) = (source_key IS NULL)
           AND (source_key IS NULL) = (source_etag IS NULL)),
    -- One product per uploaded object: a redelivered event finds it; a new version updates it.
    ADD CONSTRAINT products_source_unique UNIQUE (source_bucket, source_key);
