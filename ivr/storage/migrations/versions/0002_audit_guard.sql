-- Frozen copy of the audit_log guard (append-only, extend-the-head) that migrations
-- 0002 and 0004 install; a change to the guard gets a migration with its own copy.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: ' || TG_OP || ' is not allowed';
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION audit_log_extend_head() RETURNS trigger AS $$
DECLARE
  head_seq bigint := 0;
BEGIN
  SELECT seq INTO head_seq FROM audit_log ORDER BY seq DESC LIMIT 1;
  IF NOT FOUND THEN
    head_seq := 0;
  END IF;
  IF NEW.seq IS DISTINCT FROM head_seq + 1 THEN
    RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: entry ' || NEW.seq
      || ' must extend the head (seq ' || head_seq || ')';
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_log_extend_head ON audit_log;
CREATE TRIGGER audit_log_extend_head BEFORE INSERT ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_extend_head();
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
