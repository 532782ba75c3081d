ALTER TABLE "idempotency_keys" ADD COLUMN "api_key_id" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD COLUMN "scopes" text[];--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD COLUMN "secret_redacted" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "idempotency_keys" DROP CONSTRAINT "idempotency_keys_workspace_id_key_pk";--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD CONSTRAINT "idempotency_keys_workspace_id_api_key_id_key_pk" PRIMARY KEY("workspace_id","api_key_id","key");
