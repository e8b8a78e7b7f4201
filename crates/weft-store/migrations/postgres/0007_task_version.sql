-- The version a root run was pinned to (`workflow/task:version`), which
-- its subtasks inherit.
ALTER TABLE runs ADD COLUMN task_version text;
