-- Merchandising rules and synonym sets (fashion_search.search.rules, .synonyms): each entry is
-- its checked JSON body, with who created it and when. Entries are few (hundreds): every
-- search process reads them all every couple of seconds.
CREATE TABLE merchandising_rules (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('rule', 'synonyms')),
    body       jsonb NOT NULL,
    created_by text NOT NULL CHECK (created_by <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The API adds and removes them (an admin key; the add locks the table against a concurrent
-- one, which needs DELETE or UPDATE) and reads them (SELECT, by default).
GRANT INSERT, DELETE ON merchandising_rules TO fashion_api;
GRANT USAGE ON SEQUENCE merchandising_rules_id_seq TO fashion_api;
