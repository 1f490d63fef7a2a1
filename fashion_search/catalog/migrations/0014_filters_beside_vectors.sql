-- Filtered vector search at a million products: each embedding row carries a copy of its
-- product's filter columns (FILTER_FIELDS), each indexed in every version's partition, so a
-- filtered search reads one table, either ranking the filter's rows exactly (a bitmap scan of
-- these indexes) or walking the HNSW index with the filter checked on the row it reads
-- (decision 0047). Triggers keep the copies in step with products, whoever writes.
ALTER TABLE product_embeddings
    ADD COLUMN gender          text,
    ADD COLUMN master_category text,
    ADD COLUMN sub_category    text,
    ADD COLUMN article_type    text,
    ADD COLUMN base_colour     text,
    ADD COLUMN season          text,
    ADD COLUMN year            integer,
    ADD COLUMN usage           text,
    ADD COLUMN dataset         text;

-- Vectors are stored inline: at 512 dimensions a row passes TOAST's 2 kB threshold, and every
-- exact ranking read each vector from the TOAST table.
ALTER TABLE product_embeddings ALTER COLUMN embedding SET STORAGE PLAIN;

-- The existing catalog moves over without re-embedding: the copies are filled and the vectors
-- rewritten inline in place, each version's HNSW index dropped first and built once after
-- (cheaper than an index insert per updated row).
DO $$
DECLARE
    v catalog_versions;
BEGIN
    FOR v IN SELECT * FROM catalog_versions WHERE to_regclass(partition) IS NOT NULL LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I', v.partition || '_hnsw');
    END LOOP;
    UPDATE product_embeddings e
    SET gender = p.gender, master_category = p.master_category, sub_category = p.sub_category,
        article_type = p.article_type, base_colour = p.base_colour, season = p.season,
        year = p.year, usage = p.usage, dataset = p.dataset,
        embedding = e.embedding::real[]::vector  -- a new value: stored inline
    FROM products p WHERE p.id = e.product_id;
    FOR v IN SELECT * FROM catalog_versions WHERE to_regclass(partition) IS NOT NULL LOOP
        PERFORM create_embedding_index(v.model_version);
    END LOOP;
END $$;

-- Partitioned indexes: every partition, those of later versions too, gets its own.
CREATE INDEX product_embeddings_gender ON product_embeddings (gender);
CREATE INDEX product_embeddings_master_category ON product_embeddings (master_category);
CREATE INDEX product_embeddings_sub_category ON product_embeddings (sub_category);
CREATE INDEX product_embeddings_article_type ON product_embeddings (article_type);
CREATE INDEX product_embeddings_base_colour ON product_embeddings (base_colour);
CREATE INDEX product_embeddings_season ON product_embeddings (season);
CREATE INDEX product_embeddings_year ON product_embeddings (year);
CREATE INDEX product_embeddings_usage ON product_embeddings (usage);
CREATE INDEX product_embeddings_dataset ON product_embeddings (dataset);

-- A new embedding row takes its product's values (any writer: uploads, loads, rollouts).
CREATE FUNCTION copy_product_filters() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.gender, p.master_category, p.sub_category, p.article_type, p.base_colour,
           p.season, p.year, p.usage, p.dataset
    INTO NEW.gender, NEW.master_category, NEW.sub_category, NEW.article_type, NEW.base_colour,
         NEW.season, NEW.year, NEW.usage, NEW.dataset
    FROM products p WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$;
CREATE TRIGGER product_embeddings_copy_filters BEFORE INSERT OR UPDATE OF product_id
    ON product_embeddings FOR EACH ROW EXECUTE FUNCTION copy_product_filters();

-- A product's changed values reach every version's copy (as the owner: relabelling an upload
-- needs no grant on the copies).
CREATE FUNCTION update_embedding_filters() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE product_embeddings
    SET gender = NEW.gender, master_category = NEW.master_category,
        sub_category = NEW.sub_category, article_type = NEW.article_type,
        base_colour = NEW.base_colour, season = NEW.season, year = NEW.year,
        usage = NEW.usage, dataset = NEW.dataset
    WHERE product_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER products_update_embedding_filters AFTER UPDATE ON products FOR EACH ROW
    WHEN ((OLD.gender, OLD.master_category, OLD.sub_category, OLD.article_type,
           OLD.base_colour, OLD.season, OLD.year, OLD.usage, OLD.dataset)
          IS DISTINCT FROM
          (NEW.gender, NEW.master_category, NEW.sub_category, NEW.article_type,
           NEW.base_colour, NEW.season, NEW.year, NEW.usage, NEW.dataset))
    EXECUTE FUNCTION update_embedding_filters();

ANALYZE product_embeddings;
