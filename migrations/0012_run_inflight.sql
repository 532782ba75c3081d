CREATE TABLE "run_inflight" (
	"run_id" text NOT NULL,
	"lease" integer NOT NULL,
	"batch" integer NOT NULL,
	"primary_keys" text[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "run_inflight_run_id_lease_batch_pk" PRIMARY KEY("run_id","lease","batch")
);
--> statement-breakpoint
ALTER TABLE "run_records" ADD COLUMN "redelivered" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "run_inflight" ADD CONSTRAINT "run_inflight_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;