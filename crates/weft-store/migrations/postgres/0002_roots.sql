-- Root runs newest first, for the dashboard's list.
CREATE INDEX runs_roots ON runs (seq) WHERE parent_id IS NULL;
