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
