CREATE TABLE "sequence_runs" (
	"id" text PRIMARY KEY NOT NULL,
	"workspace_id" text NOT NULL,
	"sequence_id" text NOT NULL,
	"status" text NOT NULL,
	"trigger" text NOT NULL,
	"on_failure" text NOT NULL,
	"steps" jsonb NOT NULL,
	"current_step" integer,
	"current_run_id" text,
	"error" jsonb,
	"queued_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"cancel_requested_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "sequence_steps" (
	"sequence_id" text NOT NULL,
	"position" integer NOT NULL,
	"sync_id" text NOT NULL,
	CONSTRAINT "sequence_steps_sequence_id_position_pk" PRIMARY KEY("sequence_id","position")
);
--> statement-breakpoint
CREATE TABLE "sequences" (
	"id" text PRIMARY KEY NOT NULL,
	"workspace_id" text NOT NULL,
	"slug" text NOT NULL,
	"name" text NOT NULL,
	"schedule" jsonb NOT NULL,
	"enabled" boolean DEFAULT true NOT NULL,
	"on_failure" text DEFAULT 'stop' NOT NULL,
	"version" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "sequence_runs" ADD CONSTRAINT "sequence_runs_workspace_id_workspaces_id_fk" FOREIGN KEY ("workspace_id") REFERENCES "public"."workspaces"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sequence_runs" ADD CONSTRAINT "sequence_runs_sequence_id_sequences_id_fk" FOREIGN KEY ("sequence_id") REFERENCES "public"."sequences"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sequence_steps" ADD CONSTRAINT "sequence_steps_sequence_id_sequences_id_fk" FOREIGN KEY ("sequence_id") REFERENCES "public"."sequences"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sequence_steps" ADD CONSTRAINT "sequence_steps_sync_id_syncs_id_fk" FOREIGN KEY ("sync_id") REFERENCES "public"."syncs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sequences" ADD CONSTRAINT "sequences_workspace_id_workspaces_id_fk" FOREIGN KEY ("workspace_id") REFERENCES "public"."workspaces"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "sequence_runs_sequence_idx" ON "sequence_runs" USING btree ("sequence_id","id");--> statement-breakpoint
CREATE INDEX "sequence_runs_ws_idx" ON "sequence_runs" USING btree ("workspace_id","id");--> statement-breakpoint
CREATE INDEX "sequence_runs_waiting_idx" ON "sequence_runs" USING btree ("current_run_id") WHERE status = 'running';--> statement-breakpoint
CREATE UNIQUE INDEX "sequence_runs_one_active_uq" ON "sequence_runs" USING btree ("sequence_id") WHERE status in ('queued', 'running');--> statement-breakpoint
CREATE INDEX "sequence_steps_sync_idx" ON "sequence_steps" USING btree ("sync_id");--> statement-breakpoint
CREATE UNIQUE INDEX "sequences_slug_uq" ON "sequences" USING btree ("workspace_id","slug");--> statement-breakpoint
CREATE INDEX "sequences_ws_idx" ON "sequences" USING btree ("workspace_id","id");