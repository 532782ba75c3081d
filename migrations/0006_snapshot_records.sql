ALTER TABLE "run_records" ADD COLUMN "record_id" text;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "snapshot_version" integer;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "allow_deletions" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "dry_run" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "plan_sample" jsonb;--> statement-breakpoint
ALTER TABLE "syncs" ADD COLUMN "change_thresholds" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "syncs" ADD COLUMN "snapshot_version" integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE "syncs" ADD COLUMN "snapshot_reset_at" timestamp with time zone;--> statement-breakpoint
-- The snapshot becomes one row per destination record, keyed by its match key. Existing rows get
-- the exact JSON of their match value as key; where two rows claimed one record (the bug this
-- fixes) or no match value was kept, the rows are dropped: a record missing from the snapshot is
-- never deleted by a run, only written again (the safe side).
ALTER TABLE "sync_snapshots" ADD COLUMN "match_key" text;--> statement-breakpoint
ALTER TABLE "sync_snapshots" ADD COLUMN "record_id" text;--> statement-breakpoint
UPDATE "sync_snapshots" SET "match_key" = "match_value"::text WHERE "match_value" IS NOT NULL AND "match_value" <> 'null'::jsonb;--> statement-breakpoint
DELETE FROM "sync_snapshots" s USING (
  SELECT sync_id, match_key FROM "sync_snapshots" WHERE match_key IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1
) d WHERE s.sync_id = d.sync_id AND s.match_key = d.match_key;--> statement-breakpoint
DELETE FROM "sync_snapshots" WHERE "match_key" IS NULL;--> statement-breakpoint
ALTER TABLE "sync_snapshots" ALTER COLUMN "match_key" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "sync_snapshots" DROP CONSTRAINT "sync_snapshots_sync_id_primary_key_pk";--> statement-breakpoint
ALTER TABLE "sync_snapshots" ADD CONSTRAINT "sync_snapshots_sync_id_match_key_pk" PRIMARY KEY("sync_id","match_key");
