ALTER TABLE "runs" ADD COLUMN "completed_emitted_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "write_state" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "alerts_evaluated_at" timestamp with time zone;