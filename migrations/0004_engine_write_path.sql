ALTER TABLE "run_records" DROP CONSTRAINT "run_records_run_id_runs_id_fk";
--> statement-breakpoint
ALTER TABLE "sync_snapshots" DROP CONSTRAINT "sync_snapshots_sync_id_syncs_id_fk";
--> statement-breakpoint
DROP INDEX "run_records_run_status_idx";--> statement-breakpoint
DROP INDEX "run_records_history_idx";--> statement-breakpoint
DROP INDEX "run_records_created_idx";--> statement-breakpoint
CREATE INDEX "run_records_problems_idx" ON "run_records" USING btree ("run_id","status","primary_key","operation") WHERE status <> 'succeeded';--> statement-breakpoint
-- Cascades without per-row foreign-key checks on the hot tables: one statement-level trigger each.
CREATE OR REPLACE FUNCTION backhaul_runs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM run_records r USING gone g WHERE r.run_id = g.id;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER runs_deleted_cascade AFTER DELETE ON runs REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION backhaul_runs_deleted();
--> statement-breakpoint
CREATE OR REPLACE FUNCTION backhaul_syncs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM sync_snapshots s USING gone g WHERE s.sync_id = g.id;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER syncs_deleted_cascade AFTER DELETE ON syncs REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION backhaul_syncs_deleted();
