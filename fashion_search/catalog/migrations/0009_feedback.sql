-- What shoppers did with search results: a click, an add-to-cart or a "not relevant" mark on
-- a product shown at a position for a query, in a session, by a model version. The API
-- inserts; the dispatcher relays each row to the feedback topic once (published_at), and
-- evaluation and fine-tuning read the rows as judgements. What a valid record is
-- (signals, lengths, positions) is fashion_search.learning.feedback's to say.
CREATE TABLE feedback (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    signal        text NOT NULL,
    query         text NOT NULL,
    product_id    bigint NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    position      integer NOT NULL,
    session_id    text NOT NULL,
    model_version text,
    published_at  timestamptz
);
CREATE INDEX feedback_unpublished ON feedback (id) WHERE published_at IS NULL;
CREATE INDEX feedback_query ON feedback (query);

-- The API records feedback (and reads it back, as it reads everything); the upload path's
-- dispatcher relays it to Kafka.
GRANT INSERT ON feedback TO fashion_api;
GRANT SELECT, UPDATE (published_at) ON feedback TO fashion_ingest;
