-- Online experiments (fashion_search.experiments): shoppers split by session id between arms
-- (model versions the catalog holds, or ranking settings), one experiment at a time. Each
-- search an experiment answers is a row of experiment_searches (its arm, the session), and a
-- shopper's feedback names the search it came from, so the analysis reads what each arm's
-- shoppers did with what that arm showed them.
CREATE TABLE experiments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    design     jsonb NOT NULL,
    started_by text NOT NULL CHECK (started_by <> ''),
    started_at timestamptz NOT NULL DEFAULT now(),
    stopped_by text,
    stopped_at timestamptz,
    decision   jsonb
);
-- At most one runs: a second start fails on this index, whoever tries.
CREATE UNIQUE INDEX experiments_one_running ON experiments ((true)) WHERE stopped_at IS NULL;

CREATE TABLE experiment_searches (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id bigint NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    arm           text NOT NULL,
    session_id    text NOT NULL,
    teams         jsonb,  -- an interleaved search: product id -> 0 or 1, the arm that put it there
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX experiment_searches_experiment ON experiment_searches (experiment_id);

ALTER TABLE feedback ADD COLUMN search_id bigint REFERENCES experiment_searches (id)
    ON DELETE SET NULL;
CREATE INDEX feedback_search ON feedback (search_id) WHERE search_id IS NOT NULL;

-- The API starts and stops experiments (an admin key) and records the searches they answer.
GRANT INSERT, UPDATE (stopped_by, stopped_at, decision) ON experiments TO fashion_api;
GRANT INSERT ON experiment_searches TO fashion_api;
