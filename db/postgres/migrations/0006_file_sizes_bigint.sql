-- 0006: file sizes as BIGINT. The original's models declare the three size
-- columns Integer, which SQLAlchemy makes INTEGER (32 bits) on PostgreSQL,
-- so a file of 2 GiB or more could not be recorded: the scanner's whole
-- batch would fail, every scan, for ever. On SQLite the same columns hold
-- 64-bit integers, and the Sentinel records any size there.
--
-- Widening keeps every value and every reader and writer of the original
-- tools working (an int8 reads as a Python int like an int4). It rewrites
-- the three tables once, under an exclusive lock: on a large catalogue the
-- first start of this version takes that long.
ALTER TABLE cf_file_hash_registry ALTER COLUMN size_bytes TYPE BIGINT;
ALTER TABLE cf_file_version ALTER COLUMN size_bytes TYPE BIGINT;
ALTER TABLE cf_file_location ALTER COLUMN last_known_size TYPE BIGINT;
