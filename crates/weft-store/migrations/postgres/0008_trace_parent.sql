-- The `traceparent` a root run was started with, which its subtasks
-- inherit (their trace continues the client's).
ALTER TABLE runs ADD COLUMN trace_parent text;
