-- weft's schema on PostgreSQL, version 1: the same records as the SQLite
-- store, plus what several nodes need (nodes, claims, root idempotency keys).
-- Payloads (inputs, results) are kept as the text the SDK sent.

CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE tasks (
    name text PRIMARY KEY,
    id text NOT NULL UNIQUE,
    options text NOT NULL,
    parameters text,
    registered boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE runs (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    task_name text NOT NULL,
    status text NOT NULL,
    input text NOT NULL,
    output text,
    error text,
    parent_id text,
    root_id text NOT NULL,
    created_by_attempt integer,
    -- The parent attempt that last took this child (see adoption.rs).
    taken_by_attempt integer,
    input_hash bigint,
    idempotency_key text,
    idempotency_created_at text,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    completed_at timestamptz,
    not_before timestamptz
);
CREATE INDEX runs_parent ON runs (parent_id, seq);
CREATE INDEX runs_root ON runs (root_id, seq);
CREATE INDEX runs_task ON runs (task_name, seq);
CREATE INDEX runs_status ON runs (status, seq);
-- The claim: pending runs in queue order.
CREATE INDEX runs_pending ON runs (seq) WHERE status = 'pending';
CREATE INDEX runs_adoption ON runs (parent_id, task_name, input_hash, seq) WHERE parent_id IS NOT NULL;
-- A subtask start asked twice (an SDK's retry) makes one child, whichever
-- node hears it.
CREATE UNIQUE INDEX runs_subtask_key ON runs (parent_id, idempotency_key, coalesce(idempotency_created_at, ''))
    WHERE parent_id IS NOT NULL AND idempotency_key IS NOT NULL;
CREATE INDEX runs_ended_roots ON runs (completed_at) WHERE parent_id IS NULL;

-- A root run's idempotencyKey names one run for 24 hours; the key is the
-- primary key, so concurrent starts from any nodes make one run.
CREATE TABLE root_keys (
    key text PRIMARY KEY,
    run_id text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE attempts (
    run_id text NOT NULL,
    attempt integer NOT NULL,
    status text NOT NULL,
    started_at timestamptz NOT NULL,
    completed_at timestamptz,
    error text,
    output text,
    interrupted boolean NOT NULL DEFAULT false,
    node_id text,
    node_incarnation text,
    PRIMARY KEY (run_id, attempt)
);
CREATE INDEX attempts_running ON attempts (node_id) WHERE status = 'running';

CREATE TABLE logs (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    task_name text NOT NULL,
    attempt integer NOT NULL,
    stream text NOT NULL,
    at timestamptz NOT NULL,
    message text NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, id);

-- Liveness per node: one heartbeat row each, by the database's clock.
CREATE TABLE nodes (
    id text PRIMARY KEY,
    incarnation text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    gone_at timestamptz
);
