-- Schema version 1, run by steps.m001_initial. Never edit it: later changes are new steps. No semicolons in comments
-- (the statements are split on them).
-- users: people who log in, role decides what they may do
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'reviewer', 'viewer')),
    disabled INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);

-- prompts: questions to answer, split keeps held-out prompts out of training
CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    split TEXT NOT NULL CHECK (split IN ('train', 'heldout')),
    created TEXT NOT NULL
);

-- responses: one answer to a prompt by one model version
CREATE TABLE responses (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    text TEXT NOT NULL,
    model_version TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL
);

-- demonstrations: imported SFT completions
CREATE TABLE demonstrations (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    completion TEXT NOT NULL,
    source TEXT NOT NULL,
    created TEXT NOT NULL
);

-- ratings: a reviewer's thumbs and/or 1-5 score of one response
CREATE TABLE ratings (
    id INTEGER PRIMARY KEY,
    response_id INTEGER NOT NULL REFERENCES responses(id),
    username TEXT NOT NULL,
    thumbs INTEGER CHECK (thumbs IN (0, 1)),
    likert INTEGER CHECK (likert BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL
);

-- comparisons: a blind A/B vote between two responses to one prompt
CREATE TABLE comparisons (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    response_a INTEGER NOT NULL REFERENCES responses(id),
    response_b INTEGER NOT NULL REFERENCES responses(id),
    version_a TEXT NOT NULL,
    version_b TEXT NOT NULL,
    winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie', 'both_bad')),
    username TEXT NOT NULL,
    created TEXT NOT NULL
);

-- rankings: responses of one prompt ordered best first (JSON list of ids)
CREATE TABLE rankings (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    response_ids TEXT NOT NULL,
    username TEXT NOT NULL,
    created TEXT NOT NULL
);

-- corrections: a reviewer's rewrite of a response
CREATE TABLE corrections (
    id INTEGER PRIMARY KEY,
    response_id INTEGER NOT NULL REFERENCES responses(id),
    text TEXT NOT NULL,
    username TEXT NOT NULL,
    created TEXT NOT NULL
);

-- preference_pairs: imported chosen/rejected pairs
CREATE TABLE preference_pairs (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    source TEXT NOT NULL,
    created TEXT NOT NULL
);

-- unpaired_labels: imported good/bad completions (KTO)
CREATE TABLE unpaired_labels (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    completion TEXT NOT NULL,
    label INTEGER NOT NULL CHECK (label IN (0, 1)),
    source TEXT NOT NULL,
    created TEXT NOT NULL
);

-- model_versions: trained versions, one at most is active
CREATE TABLE model_versions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    parent TEXT,
    method TEXT NOT NULL,
    technique TEXT NOT NULL,
    path TEXT NOT NULL,
    base_model TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    data_snapshot TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL CHECK (status IN ('candidate', 'active', 'archived', 'rejected')),
    created TEXT NOT NULL,
    activated TEXT
);

-- runs: training rounds: the request, the process, the outcome
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    config TEXT NOT NULL,
    stages TEXT NOT NULL,
    username TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    stage TEXT,
    error TEXT,
    log_tail TEXT NOT NULL DEFAULT '',
    versions TEXT NOT NULL DEFAULT '[]',
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    finished TEXT
);

-- run_metrics: one row per logging step of a run
CREATE TABLE run_metrics (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    stage TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created TEXT NOT NULL
);

-- audit: who did what, when
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL
);

-- indexes
CREATE INDEX idx_responses_prompt ON responses(prompt_id);
CREATE INDEX idx_ratings_response ON ratings(response_id);
CREATE INDEX idx_run_metrics_run ON run_metrics(run_id, id);
