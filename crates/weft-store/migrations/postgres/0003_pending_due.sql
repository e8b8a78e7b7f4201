-- When the next pending run is due, read off an index instead of every
-- pending row per claim (a fan-out of N children read N^2/2 rows).
CREATE INDEX runs_pending_due ON runs (not_before NULLS FIRST) WHERE status = 'pending';
