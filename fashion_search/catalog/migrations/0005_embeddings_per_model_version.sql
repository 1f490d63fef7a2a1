-- Catalog embeddings per model version, so that several versions coexist: a rollout builds the
-- candidate's embeddings while the serving version's are searched, switches the serving record
-- in one transaction, and keeps the previous version's for an instant rollback.
--
-- catalog_versions is the serving record: one row per model version the catalog holds
-- embeddings of (or held), in one of four states; at most one row is 'serving'.
CREATE TABLE catalog_versions (
    model_version text PRIMARY KEY CHECK (model_version <> ''),
    dimension     integer NOT NULL CHECK (dimension > 0),
    partition     text NOT NULL UNIQUE,
    state         text NOT NULL DEFAULT 'building'
                  CHECK (state IN ('building', 'ready', 'serving', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    state_since   timestamptz NOT NULL DEFAULT now(),
    -- When a version that served and was replaced stops being a rollback target.
    retire_after  timestamptz
);
CREATE UNIQUE INDEX catalog_versions_one_serving ON catalog_versions (state)
    WHERE state = 'serving';

-- One partition per version, each with its own dimension (a CHECK) and its own HNSW index
-- on the embedding cast to that dimension (pgvector's way of indexing mixed dimensions).
CREATE TABLE product_embeddings (
    model_version text NOT NULL REFERENCES catalog_versions (model_version),
    product_id    bigint NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    embedding     vector NOT NULL,
    PRIMARY KEY (model_version, product_id)
) PARTITION BY LIST (model_version);

-- The record and the empty partition of a new version (state 'building', no index yet).
CREATE FUNCTION create_embedding_partition(version text, dim integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'product_embeddings_' || regexp_replace(lower(version), '[^a-z0-9]+', '_', 'g');
BEGIN
    INSERT INTO catalog_versions (model_version, dimension, partition) VALUES (version, dim, part);
    EXECUTE format('CREATE TABLE %I PARTITION OF product_embeddings FOR VALUES IN (%L)',
                   part, version);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (vector_dims(embedding) = %s)',
                   part, part || '_dimension', dim);
    RETURN part;
END $$;

-- The HNSW index of a version's partition (if missing).
CREATE FUNCTION create_embedding_index(version text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v catalog_versions;
BEGIN
    SELECT * INTO STRICT v FROM catalog_versions WHERE model_version = version;
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I'
                   ' USING hnsw ((embedding::vector(%s)) vector_cosine_ops)',
                   v.partition || '_hnsw', v.partition, v.dimension);
END $$;

-- The existing catalog moves over without re-embedding: the version that embedded most
-- products becomes the serving one with its vectors; vectors of any other version (a
-- re-embed cut short) are dropped, and those products are embedded again by the next pass.
DO $$
DECLARE
    current text;
    dim integer;
BEGIN
    SELECT model_version INTO current FROM products WHERE model_version IS NOT NULL
        GROUP BY model_version ORDER BY count(*) DESC, model_version DESC LIMIT 1;
    IF current IS NOT NULL THEN
        SELECT atttypmod INTO dim FROM pg_attribute
            WHERE attrelid = 'products'::regclass AND attname = 'embedding';
        PERFORM create_embedding_partition(current, dim);
        INSERT INTO product_embeddings (model_version, product_id, embedding)
            SELECT model_version, id, embedding FROM products WHERE model_version = current;
        PERFORM create_embedding_index(current);
        UPDATE catalog_versions SET state = 'serving' WHERE model_version = current;
    END IF;
END $$;

DROP INDEX IF EXISTS products_embedding_hnsw;
DROP INDEX products_model_version;
ALTER TABLE products
    DROP CONSTRAINT embedding_has_model_version,
    DROP COLUMN embedding,
    DROP COLUMN model_version;
