-- Any change to a key that matters to authentication (revocation, scopes, owner, deletion), made
-- by the API or by hand, tells every instance to forget it (their key caches, see api-keys.ts).
-- last_used_at updates are not such a change.
CREATE OR REPLACE FUNCTION backhaul_api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('backhaul_api_keys', OLD.id);
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER api_keys_changed AFTER UPDATE OF revoked_at, scopes, owner, token_hash, workspace_id OR DELETE ON api_keys
  FOR EACH ROW EXECUTE FUNCTION backhaul_api_key_changed();
