-- Per-run staging and plan tables (created and dropped by the engine) live here.
CREATE SCHEMA IF NOT EXISTS backhaul_staging;
