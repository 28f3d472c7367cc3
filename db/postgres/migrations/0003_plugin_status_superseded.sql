-- 0003: the Sentinel marks older versions of a plugin SUPERSEDED when a new
-- one is deployed (SPEC part B lists the status), but the original's
-- PluginStatusEnum has no such member, so its PostgreSQL type refuses the
-- value. The value is added to the type; the original's tools never write
-- it. (On SQLite the column is VARCHAR(8), whose length SQLite does not
-- enforce.)
--
-- ADD VALUE may run inside a transaction since PostgreSQL 12, but the
-- value can be used only once it has committed: that is why it is a
-- migration of its own.
DO $$
BEGIN
    IF to_regtype('pluginstatusenum') IS NOT NULL THEN
        ALTER TYPE pluginstatusenum ADD VALUE IF NOT EXISTS 'SUPERSEDED';
    END IF;
END $$;
