-- Least privilege: the search API reads the catalog, the upload path (bucket-event function,
-- dispatcher) also writes products and embeddings; migrations, loads and rollouts run as the
-- owner (the role running this migration). Roles are cluster-wide and made here without LOGIN
-- (idempotent, safe while other databases migrate at the same time); the stack (stack/access.py)
-- gives them LOGIN and their passwords. Grants are per database: every database migrated
-- gets them.
DO $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY['fashion_api', 'fashion_ingest'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            END;
        END IF;
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA public TO fashion_api, fashion_ingest;

-- The API: SELECT on every table, those made later by the owner too (api_keys, each model
-- version's partition of product_embeddings).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO fashion_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO fashion_api;

-- The upload path: reads the serving record, writes products (inserts, relabels and deletes
-- uploaded ones) and embeddings, through the parent and each version's partition (the writes
-- name the partition). Its advisory locks need no grant.
GRANT SELECT ON catalog_versions TO fashion_ingest;
GRANT SELECT, INSERT, UPDATE, DELETE ON products, product_embeddings TO fashion_ingest;

-- Partitions made from now on get the same grants as they are made (by a rollout)...
CREATE OR REPLACE FUNCTION create_embedding_partition(version text, dim integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'product_embeddings_' || regexp_replace(lower(version), '[^a-z0-9]+', '_', 'g');
BEGIN
    INSERT INTO catalog_versions (model_version, dimension, partition) VALUES (version, dim, part);
    EXECUTE format('CREATE TABLE %I PARTITION OF product_embeddings FOR VALUES IN (%L)',
                   part, version);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (vector_dims(embedding) = %s)',
                   part, part || '_dimension', dim);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO fashion_ingest', part);
    RETURN part;
END $$;

-- ...and those that exist already get them now.
DO $$
DECLARE
    part text;
BEGIN
    FOR part IN SELECT partition FROM catalog_versions WHERE to_regclass(partition) IS NOT NULL
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO fashion_ingest', part);
    END LOOP;
END $$;
