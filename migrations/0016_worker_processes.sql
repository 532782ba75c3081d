CREATE TABLE "worker_processes" (
	"id" text PRIMARY KEY NOT NULL,
	"pool_ids" text[] DEFAULT '{}'::text[] NOT NULL,
	"host" text NOT NULL,
	"pid" integer NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_seen_at" timestamp with time zone DEFAULT now() NOT NULL
);
