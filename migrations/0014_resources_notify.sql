-- Reads of syncs are cached by each API instance (src/domain/read-cache.ts). Any statement that
-- changes what a sync's view shows — the sync itself, or the slug of its model or destination —
-- made by any instance, the worker or by hand, tells every instance to empty that cache.
-- One notification per statement (and PostgreSQL folds identical ones within a transaction).
CREATE OR REPLACE FUNCTION backhaul_resources_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('backhaul_resources', TG_TABLE_NAME);
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER syncs_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON syncs
  FOR EACH STATEMENT EXECUTE FUNCTION backhaul_resources_changed();
--> statement-breakpoint
CREATE TRIGGER models_changed AFTER UPDATE OF slug OR DELETE ON models
  FOR EACH STATEMENT EXECUTE FUNCTION backhaul_resources_changed();
--> statement-breakpoint
CREATE TRIGGER connections_changed AFTER UPDATE OF slug OR DELETE ON connections
  FOR EACH STATEMENT EXECUTE FUNCTION backhaul_resources_changed();
