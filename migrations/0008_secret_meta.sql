ALTER TABLE "alert_channels" ADD COLUMN "secret_meta" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "connections" ADD COLUMN "secret_meta" jsonb DEFAULT '{}'::jsonb NOT NULL;