CREATE SEQUENCE "public"."run_claim_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "claim_seq" bigint;--> statement-breakpoint
CREATE INDEX "runs_claim_idx" ON "runs" USING btree ("sync_id","claim_seq");