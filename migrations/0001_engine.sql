CREATE TABLE "run_records" (
	"run_id" text NOT NULL,
	"workspace_id" text NOT NULL,
	"sync_id" text NOT NULL,
	"primary_key" text NOT NULL,
	"operation" text NOT NULL,
	"status" text NOT NULL,
	"error_code" text,
	"error_message" text,
	"attempts" integer DEFAULT 1 NOT NULL,
	"batch" integer,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "run_records_run_id_primary_key_operation_pk" PRIMARY KEY("run_id","primary_key","operation")
);
--> statement-breakpoint
CREATE TABLE "runs" (
	"id" text PRIMARY KEY NOT NULL,
	"workspace_id" text NOT NULL,
	"sync_id" text NOT NULL,
	"status" text NOT NULL,
	"phase" text,
	"trigger" text NOT NULL,
	"full_resync" boolean DEFAULT false NOT NULL,
	"callback_url" text,
	"queued_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"phases" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"counts" jsonb NOT NULL,
	"error" jsonb,
	"cancel_requested_at" timestamp with time zone,
	"worker_id" text,
	"heartbeat_at" timestamp with time zone,
	"staged_at" timestamp with time zone,
	"planned_at" timestamp with time zone,
	"planned_total" integer,
	"attempts" integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sync_snapshots" (
	"sync_id" text NOT NULL,
	"primary_key" text NOT NULL,
	"hash" text NOT NULL,
	"match_value" jsonb,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "sync_snapshots_sync_id_primary_key_pk" PRIMARY KEY("sync_id","primary_key")
);
--> statement-breakpoint
ALTER TABLE "run_records" ADD CONSTRAINT "run_records_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "runs" ADD CONSTRAINT "runs_workspace_id_workspaces_id_fk" FOREIGN KEY ("workspace_id") REFERENCES "public"."workspaces"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "runs" ADD CONSTRAINT "runs_sync_id_syncs_id_fk" FOREIGN KEY ("sync_id") REFERENCES "public"."syncs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sync_snapshots" ADD CONSTRAINT "sync_snapshots_sync_id_syncs_id_fk" FOREIGN KEY ("sync_id") REFERENCES "public"."syncs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "run_records_run_status_idx" ON "run_records" USING btree ("run_id","status");--> statement-breakpoint
CREATE INDEX "run_records_history_idx" ON "run_records" USING btree ("sync_id","primary_key");--> statement-breakpoint
CREATE INDEX "run_records_created_idx" ON "run_records" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "runs_sync_idx" ON "runs" USING btree ("sync_id","id");--> statement-breakpoint
CREATE INDEX "runs_ws_idx" ON "runs" USING btree ("workspace_id","id");--> statement-breakpoint
CREATE INDEX "runs_active_idx" ON "runs" USING btree ("sync_id") WHERE status in ('queued', 'running');