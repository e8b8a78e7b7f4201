-- What each attempt's processes used (Store::record_usage): their peak
-- memory and CPU time, from the attempt's cgroup.
ALTER TABLE attempts ADD COLUMN peak_memory_bytes bigint;
ALTER TABLE attempts ADD COLUMN cpu_time_ms bigint;
