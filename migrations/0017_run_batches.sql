CREATE TABLE "run_batches" (
	"run_id" text NOT NULL,
	"batch" integer NOT NULL,
	"operation" text NOT NULL,
	"workspace_id" text NOT NULL,
	"sync_id" text NOT NULL,
	"primary_keys" text[] NOT NULL,
	"record_ids" text[],
	"attempts" integer[],
	"redelivered" boolean[],
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "run_batches_run_id_batch_operation_pk" PRIMARY KEY("run_id","batch","operation")
);
--> statement-breakpoint
ALTER TABLE "run_batches" ADD CONSTRAINT "run_batches_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
-- Every recorded outcome of a run's rows (see run_batches in src/db/schema.ts). A null array of
-- run_batches reads as nulls at every position (unnest pads the shorter arrays).
CREATE VIEW "run_outcomes" AS
  SELECT run_id, workspace_id, sync_id, primary_key, operation, status, error_code, error_message, attempts, batch, record_id, redelivered, created_at
  FROM run_records
  UNION ALL
  SELECT b.run_id, b.workspace_id, b.sync_id, u.primary_key, b.operation, 'succeeded'::text, NULL::text, NULL::text,
         coalesce(u.attempts, 1), b.batch, u.record_id, coalesce(u.redelivered, false), b.created_at
  FROM run_batches b
  CROSS JOIN LATERAL unnest(b.primary_keys, b.record_ids, b.attempts, b.redelivered) AS u(primary_key, record_id, attempts, redelivered);
