-- Keys of the search API: only each key's SHA-256 is stored (a key is 256 random bits, so a
-- fast hash is enough: nothing to brute-force), with a short prefix to tell keys apart.
CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scope       text        NOT NULL CHECK (scope IN ('search', 'admin')),
    key_sha256  bytea       NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
    prefix      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
