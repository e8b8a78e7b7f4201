-- Each node's own timeout, kept with it: the others take its attempts over
-- once it has been silent that long, the same time it fences itself by,
-- whatever timeout they run with themselves. NULL (a node of an older
-- weft): the default, 10 s.
ALTER TABLE nodes ADD COLUMN timeout_ms integer;
