-- The daily aggregates' marks: every write that can change a day's counts marks that
-- Istanbul day in aggregate_marks, inside the writing statement (a webhook's one statement
-- stays one round trip). The sequencer's pass deletes the marks it sees and counts those
-- days again from the stored rows in the same transaction
-- (ivr/services/daily_aggregates.py); the pages count a day still marked from the stored
-- rows themselves, so no page ever reads a stale day.
--
-- A mark is a new row, never an update or an upsert of a shared one: concurrent webhooks
-- never wait on each other or on a pass, and a mark committed while a pass counts stays
-- for the next pass.

CREATE OR REPLACE FUNCTION ivr_istanbul_day(at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE AS $$ SELECT (at AT TIME ZONE 'Europe/Istanbul')::date $$;

CREATE OR REPLACE FUNCTION ivr_mark_day(at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF at IS NOT NULL THEN
    INSERT INTO aggregate_marks (day) VALUES (ivr_istanbul_day(at));
  END IF;
END $$;

-- A consent counts on its own day; it also takes its run out of the hang-ups of the run's
-- day (a run with a decision is no hang-up).
CREATE OR REPLACE FUNCTION ivr_consents_mark() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM ivr_mark_day(OLD.captured_at);
    PERFORM ivr_mark_day(created_at) FROM flow_runs WHERE id = OLD.run_id;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM ivr_mark_day(NEW.captured_at);
    PERFORM ivr_mark_day(created_at) FROM flow_runs WHERE id = NEW.run_id;
  END IF;
  RETURN NULL;
END $$;

-- A run counts on the day it started: its language, flow version, hidden number, and, once
-- it hung up, where in the notice (its step, what it heard).
CREATE OR REPLACE FUNCTION ivr_runs_mark() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM ivr_mark_day(OLD.created_at);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM ivr_mark_day(NEW.created_at);
  END IF;
  RETURN NULL;
END $$;

-- A call's end time places its runs' hang-ups in the notice.
CREATE OR REPLACE FUNCTION ivr_calls_mark() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM ivr_mark_day(created_at) FROM flow_runs
   WHERE call_sid = NEW.call_sid AND hangup_at IS NOT NULL;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS ivr_consents_mark ON consents;
CREATE TRIGGER ivr_consents_mark AFTER INSERT OR DELETE ON consents
  FOR EACH ROW EXECUTE FUNCTION ivr_consents_mark();
DROP TRIGGER IF EXISTS ivr_consents_mark_update ON consents;
CREATE TRIGGER ivr_consents_mark_update AFTER UPDATE ON consents
  FOR EACH ROW WHEN (
    OLD.captured_at IS DISTINCT FROM NEW.captured_at OR OLD.decision IS DISTINCT FROM NEW.decision
    OR OLD.language IS DISTINCT FROM NEW.language OR OLD.call_sid IS DISTINCT FROM NEW.call_sid
    OR OLD.transfer_id IS DISTINCT FROM NEW.transfer_id
    OR OLD.agent_id IS DISTINCT FROM NEW.agent_id
    OR OLD.flow_version IS DISTINCT FROM NEW.flow_version
    OR OLD.notice_version IS DISTINCT FROM NEW.notice_version
    OR OLD.run_id IS DISTINCT FROM NEW.run_id)
  EXECUTE FUNCTION ivr_consents_mark();

DROP TRIGGER IF EXISTS ivr_runs_mark ON flow_runs;
CREATE TRIGGER ivr_runs_mark AFTER INSERT OR DELETE ON flow_runs
  FOR EACH ROW EXECUTE FUNCTION ivr_runs_mark();
DROP TRIGGER IF EXISTS ivr_runs_mark_update ON flow_runs;
CREATE TRIGGER ivr_runs_mark_update AFTER UPDATE ON flow_runs
  FOR EACH ROW WHEN (
    NEW.hangup_at IS NOT NULL OR OLD.hangup_at IS NOT NULL
    OR OLD.created_at IS DISTINCT FROM NEW.created_at
    OR OLD.call_sid IS DISTINCT FROM NEW.call_sid
    OR OLD.flow_version IS DISTINCT FROM NEW.flow_version
    OR (OLD.state ->> 'language') IS DISTINCT FROM (NEW.state ->> 'language')
    OR (OLD.state -> 'context' ->> 'hidden_caller')
       IS DISTINCT FROM (NEW.state -> 'context' ->> 'hidden_caller'))
  EXECUTE FUNCTION ivr_runs_mark();

DROP TRIGGER IF EXISTS ivr_calls_mark ON calls;
CREATE TRIGGER ivr_calls_mark AFTER UPDATE ON calls
  FOR EACH ROW WHEN (OLD.ended_at IS DISTINCT FROM NEW.ended_at)
  EXECUTE FUNCTION ivr_calls_mark();
