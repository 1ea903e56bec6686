-- Frozen copy of the functions migration 0007 created (never edited: a later migration
-- replaces them with its own copy).
-- Queue audit leaves in their order: `leaves` is a JSON array of [kind, ref, body]; `needle`
-- in a body becomes `value` (when a needle is given).
CREATE OR REPLACE FUNCTION ivr_queue_leaves(leaves json, at timestamptz, needle text,
                                            value text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  leaf json;
BEGIN
  FOR leaf IN SELECT x FROM json_array_elements(leaves) WITH ORDINALITY AS t(x, n)
               ORDER BY n LOOP
    INSERT INTO audit_queue (kind, ref, body, queued_at)
    VALUES (leaf ->> 0, leaf ->> 1,
            CASE WHEN needle IS NULL THEN leaf ->> 2 ELSE replace(leaf ->> 2, needle, value) END,
            at);
  END LOOP;
END $$;

-- ivr/services/calls.py ordered_times: start <= answer <= end, keeping the later moment.
CREATE OR REPLACE FUNCTION ivr_ordered_times(INOUT started timestamptz,
                                             INOUT answered timestamptz,
                                             INOUT ended timestamptz)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  floor timestamptz;
BEGIN
  IF answered IS NOT NULL AND started IS NOT NULL AND answered < started THEN
    answered := started;
  END IF;
  floor := coalesce(answered, started);
  IF ended IS NOT NULL AND floor IS NOT NULL AND ended < floor THEN
    ended := floor;
  END IF;
END $$;

-- /voice/incoming: the call row, the run, its first turn, the leaves, the webhook.
CREATE OR REPLACE FUNCTION ivr_webhook_incoming(p json, OUT outcome text, OUT response text)
LANGUAGE plpgsql AS $$
DECLARE
  p_token text;
  p_path text;
  p_now timestamptz;
  p_sid text;
  p_account text;
  p_phone_hmac text;
  p_phone_enc text;
  p_to text;
  p_direction text;
  p_status text;
  p_decisive text[];
  p_channels text[];
  p_granted text;
  p_run text;
  p_origin text;
  p_flow_id text;
  p_flow_version text;
  p_state json;
  p_ended boolean;
  p_heard json;
  p_notice json;
  p_actions json;
  p_twiml text;
  p_leaves json;
  c calls;
  t record;
BEGIN
  SELECT * INTO p_token, p_path, p_now, p_sid, p_account, p_phone_hmac, p_phone_enc, p_to, p_direction, p_status, p_decisive, p_channels, p_granted, p_run, p_origin, p_flow_id, p_flow_version, p_state, p_ended, p_heard, p_notice, p_actions, p_twiml, p_leaves
    FROM json_to_record(p) AS x(p_token text, p_path text, p_now timestamptz, p_sid text, p_account text, p_phone_hmac text, p_phone_enc text, p_to text, p_direction text, p_status text, p_decisive text[], p_channels text[], p_granted text, p_run text, p_origin text, p_flow_id text, p_flow_version text, p_state json, p_ended boolean, p_heard json, p_notice json, p_actions json, p_twiml text, p_leaves json);
  IF p_token IS NOT NULL THEN
    SELECT w.response INTO response FROM webhook_requests w
     WHERE w.idempotency_token = p_token;
    IF FOUND THEN outcome := 'retry'; RETURN; END IF;
  END IF;
  outcome := 'slow';
  IF EXISTS (SELECT 1 FROM flow_runs r WHERE r.call_sid = p_sid AND r.origin = p_origin)
     OR NOT EXISTS (SELECT 1 FROM flow_versions v WHERE v.version = p_flow_version)
     -- A caller with a granted channel is offered the withdrawal: the ORM verb looks it up.
     OR (p_phone_hmac IS NOT NULL AND EXISTS (
           SELECT 1 FROM (
             SELECT DISTINCT ON (ch.value) k.decision
               FROM consents k CROSS JOIN LATERAL json_array_elements_text(k.channels) ch
              WHERE k.phone_hmac = p_phone_hmac AND k.decision = ANY (p_decisive)
                AND ch.value = ANY (p_channels)
              ORDER BY ch.value, k.captured_at DESC, k.id DESC) latest
            WHERE latest.decision = p_granted)) THEN
    RETURN;
  END IF;
  SELECT * INTO c FROM calls WHERE call_sid = p_sid FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO calls (call_sid, account_sid, phone_hmac, phone_enc, to_number, direction,
                       status, started_at, answered_at, seen_incoming, created_at)
    VALUES (p_sid, p_account, p_phone_hmac, p_phone_enc, p_to, p_direction, p_status,
            p_now, p_now, true, p_now);
  ELSE
    -- The caller's parties as the run will record them must be the ones passed in.
    IF c.seen_incoming
       OR coalesce(c.phone_hmac, p_phone_hmac) IS DISTINCT FROM p_phone_hmac
       OR coalesce(nullif(c.to_number, ''), p_to) IS DISTINCT FROM p_to
       OR coalesce(nullif(c.direction, ''), p_direction) IS DISTINCT FROM p_direction THEN
      RETURN;
    END IF;
    t := ivr_ordered_times(coalesce(c.started_at, p_now), coalesce(c.answered_at, p_now),
                           c.ended_at);
    UPDATE calls SET
      account_sid = coalesce(nullif(c.account_sid, ''), p_account),
      phone_hmac = p_phone_hmac,
      phone_enc = CASE WHEN c.phone_hmac IS NULL THEN p_phone_enc ELSE c.phone_enc END,
      to_number = p_to, direction = p_direction, seen_incoming = true,
      started_at = t.started, answered_at = t.answered, ended_at = t.ended,
      status = coalesce(c.status, p_status)
    WHERE call_sid = p_sid;
  END IF;
  INSERT INTO flow_runs (id, call_sid, origin, flow_id, flow_version, transfer_id, agent_id,
                         state, step, ended, hangup_at, heard, notice, created_at, updated_at)
  VALUES (p_run, p_sid, p_origin, p_flow_id, p_flow_version, NULL, NULL, p_state, 0,
          p_ended, NULL, p_heard, p_notice, p_now, p_now);
  INSERT INTO flow_turns (run_id, step, input, actions, twiml, created_at)
  VALUES (p_run, 0, NULL, p_actions, p_twiml, p_now);
  PERFORM ivr_queue_leaves(p_leaves, p_now, NULL, NULL);
  INSERT INTO webhook_requests (path, call_sid, idempotency_token, received_at, outcome,
                                status_code, response)
  VALUES (p_path, p_sid, p_token, p_now, 'ok', 200, p_twiml);
  outcome := 'ok';
END $$;

-- /voice/gather: the run's next turn when the run is exactly where the URL says.
CREATE OR REPLACE FUNCTION ivr_webhook_gather(p json, OUT outcome text, OUT response text)
LANGUAGE plpgsql AS $$
DECLARE
  p_token text;
  p_path text;
  p_now timestamptz;
  p_sid text;
  p_run text;
  p_step integer;
  p_flow_version text;
  p_state_before jsonb;
  p_heard_before jsonb;
  p_notice_before jsonb;
  p_state json;
  p_ended boolean;
  p_heard json;
  p_notice json;
  p_input json;
  p_actions json;
  p_twiml text;
  p_leaves json;
  p_decision text;
  p_phone_hmac text;
  p_purpose text;
  p_channels json;
  p_digits text;
  p_language text;
  p_notice_version text;
  p_audio json;
  p_needle text;
  r flow_runs;
  v_hmac text;
  v_enc text;
  v_id bigint;
BEGIN
  SELECT * INTO p_token, p_path, p_now, p_sid, p_run, p_step, p_flow_version, p_state_before, p_heard_before, p_notice_before, p_state, p_ended, p_heard, p_notice, p_input, p_actions, p_twiml, p_leaves, p_decision, p_phone_hmac, p_purpose, p_channels, p_digits, p_language, p_notice_version, p_audio, p_needle
    FROM json_to_record(p) AS x(p_token text, p_path text, p_now timestamptz, p_sid text, p_run text, p_step integer, p_flow_version text, p_state_before jsonb, p_heard_before jsonb, p_notice_before jsonb, p_state json, p_ended boolean, p_heard json, p_notice json, p_input json, p_actions json, p_twiml text, p_leaves json, p_decision text, p_phone_hmac text, p_purpose text, p_channels json, p_digits text, p_language text, p_notice_version text, p_audio json, p_needle text);
  IF p_token IS NOT NULL THEN
    SELECT w.response INTO response FROM webhook_requests w
     WHERE w.idempotency_token = p_token;
    IF FOUND THEN outcome := 'retry'; RETURN; END IF;
  END IF;
  outcome := 'slow';
  SELECT * INTO r FROM flow_runs WHERE id = p_run FOR UPDATE;
  IF NOT FOUND OR r.call_sid <> p_sid OR r.step <> p_step - 1 OR r.ended
     OR r.transfer_id IS NOT NULL OR r.agent_id IS NOT NULL
     OR r.flow_version <> p_flow_version
     OR r.state::jsonb <> p_state_before OR r.heard::jsonb <> p_heard_before
     OR r.notice::jsonb <> p_notice_before THEN
    RETURN;
  END IF;
  IF p_decision IS NOT NULL THEN
    SELECT k.phone_hmac, k.phone_enc INTO v_hmac, v_enc FROM calls k WHERE k.call_sid = p_sid;
    IF NOT FOUND OR v_hmac IS DISTINCT FROM p_phone_hmac THEN
      RETURN;
    END IF;
  END IF;
  UPDATE flow_runs SET state = p_state, step = p_step, ended = p_ended, updated_at = p_now,
                       heard = p_heard, notice = p_notice
   WHERE id = p_run;
  INSERT INTO flow_turns (run_id, step, input, actions, twiml, created_at)
  VALUES (p_run, p_step, p_input, p_actions, p_twiml, p_now);
  IF p_decision IS NOT NULL THEN
    INSERT INTO consents (run_id, call_sid, phone_hmac, phone_enc, purpose, channels,
                          decision, digits, language, notice_version, flow_version,
                          captured_at, agent_id, transfer_id, source, reason, audio,
                          idempotency_key)
    VALUES (p_run, p_sid, v_hmac, v_enc, p_purpose, p_channels, p_decision, p_digits,
            p_language, p_notice_version, p_flow_version, p_now, NULL, NULL, 'ivr', NULL,
            p_audio, NULL)
    RETURNING id INTO v_id;
  END IF;
  PERFORM ivr_queue_leaves(p_leaves, p_now, p_needle, '"consent_id":' || v_id);
  INSERT INTO webhook_requests (path, call_sid, idempotency_token, received_at, outcome,
                                status_code, response)
  VALUES (p_path, p_sid, p_token, p_now, 'ok', 200, p_twiml);
  outcome := 'ok';
END $$;

-- /voice/status: the event, the call's times and status in Twilio's order, hung-up runs.
CREATE OR REPLACE FUNCTION ivr_webhook_status(p json, OUT outcome text, OUT response text,
                                              OUT ended_now boolean, OUT final_status text)
LANGUAGE plpgsql AS $$
DECLARE
  p_token text;
  p_path text;
  p_now timestamptz;
  p_sid text;
  p_account text;
  p_phone_hmac text;
  p_phone_enc text;
  p_to text;
  p_direction text;
  p_status text;
  p_seq bigint;
  p_ts timestamptz;
  p_duration integer;
  p_key text;
  p_data json;
  p_ranks jsonb;
  p_terminal text[];
  p_starting text[];
  p_answering text[];
  p_active_transfers text[];
  p_body_applied text;
  p_body_stored text;
  p_hangup_kind text;
  p_hangup_body text;
  p_run_needle text;
  p_step_needle text;
  c calls;
  found_call boolean;
  v_hmac text; v_enc text; v_to text; v_dir text; v_account text;
  v_event timestamptz;
  v_started timestamptz; v_answered timestamptz; v_ended timestamptz;
  v_duration integer;
  t record;
  r record;
  v_applied boolean;
  v_terminal boolean;
BEGIN
  SELECT * INTO p_token, p_path, p_now, p_sid, p_account, p_phone_hmac, p_phone_enc, p_to, p_direction, p_status, p_seq, p_ts, p_duration, p_key, p_data, p_ranks, p_terminal, p_starting, p_answering, p_active_transfers, p_body_applied, p_body_stored, p_hangup_kind, p_hangup_body, p_run_needle, p_step_needle
    FROM json_to_record(p) AS x(p_token text, p_path text, p_now timestamptz, p_sid text, p_account text, p_phone_hmac text, p_phone_enc text, p_to text, p_direction text, p_status text, p_seq bigint, p_ts timestamptz, p_duration integer, p_key text, p_data json, p_ranks jsonb, p_terminal text[], p_starting text[], p_answering text[], p_active_transfers text[], p_body_applied text, p_body_stored text, p_hangup_kind text, p_hangup_body text, p_run_needle text, p_step_needle text);
  v_terminal := p_status = ANY (p_terminal);
  ended_now := false;
  IF p_token IS NOT NULL THEN
    SELECT w.response INTO response FROM webhook_requests w
     WHERE w.idempotency_token = p_token;
    IF FOUND THEN outcome := 'retry'; RETURN; END IF;
  END IF;
  outcome := 'slow';
  IF v_terminal AND p_active_transfers IS NOT NULL AND EXISTS (
       SELECT 1 FROM transfers x WHERE x.call_sid = p_sid
          AND x.status = ANY (p_active_transfers)) THEN
    RETURN;
  END IF;
  SELECT * INTO c FROM calls WHERE call_sid = p_sid FOR UPDATE;
  found_call := FOUND;
  -- The caller's number is passed encrypted only when asked for: a call that does not
  -- know it yet (a status before the incoming webhook) is left to the ORM verb.
  IF c.phone_hmac IS NULL AND p_phone_hmac IS NOT NULL AND p_phone_enc IS NULL THEN
    RETURN;
  END IF;
  v_account := coalesce(nullif(c.account_sid, ''), p_account);
  IF c.phone_hmac IS NULL AND p_phone_hmac IS NOT NULL THEN
    v_hmac := p_phone_hmac; v_enc := p_phone_enc;
  ELSE
    v_hmac := c.phone_hmac; v_enc := c.phone_enc;
  END IF;
  v_to := coalesce(nullif(c.to_number, ''), p_to);
  v_dir := coalesce(nullif(c.direction, ''), p_direction);
  IF EXISTS (SELECT 1 FROM call_events e WHERE e.call_sid = p_sid AND e.dedupe_key = p_key)
  THEN
    IF NOT found_call THEN
      RETURN;  -- an event without its call: the ORM verb makes the call row
    END IF;
    UPDATE calls SET account_sid = v_account, phone_hmac = v_hmac, phone_enc = v_enc,
                     to_number = v_to, direction = v_dir
     WHERE call_sid = p_sid
       AND (account_sid, phone_hmac, to_number, direction)
           IS DISTINCT FROM (v_account, v_hmac, v_to, v_dir);
    outcome := 'duplicate';
  ELSE
    INSERT INTO call_events (call_sid, kind, status, dedupe_key, sequence_number,
                             twilio_timestamp, received_at, data)
    VALUES (p_sid, 'status', p_status, p_key, p_seq, p_ts, p_now, p_data);
    v_event := coalesce(p_ts, p_now);
    v_started := c.started_at; v_answered := c.answered_at; v_ended := c.ended_at;
    v_duration := c.duration;
    IF p_status = ANY (p_starting) THEN v_started := least(v_started, v_event); END IF;
    IF p_status = ANY (p_answering) THEN v_answered := least(v_answered, v_event); END IF;
    IF v_terminal THEN
      v_ended := v_event;
      IF p_duration IS NOT NULL THEN v_duration := p_duration; END IF;
    END IF;
    t := ivr_ordered_times(v_started, v_answered, v_ended);
    v_applied := ROW(coalesce((p_ranks ->> p_status)::int, 0), coalesce(p_seq, -1),
                     coalesce(extract(epoch FROM p_ts), 0))
               > ROW(coalesce((p_ranks ->> c.status)::int, 0), coalesce(c.status_seq, -1),
                     coalesce(extract(epoch FROM c.status_at), 0));
    IF found_call THEN
      UPDATE calls SET account_sid = v_account, phone_hmac = v_hmac, phone_enc = v_enc,
                       to_number = v_to, direction = v_dir, started_at = t.started,
                       answered_at = t.answered, ended_at = t.ended, duration = v_duration,
                       status = CASE WHEN v_applied THEN p_status ELSE status END,
                       status_seq = CASE WHEN v_applied THEN p_seq ELSE status_seq END,
                       status_at = CASE WHEN v_applied THEN p_ts ELSE status_at END
       WHERE call_sid = p_sid;
    ELSE
      INSERT INTO calls (call_sid, account_sid, phone_hmac, phone_enc, to_number, direction,
                         status, status_seq, status_at, started_at, answered_at, ended_at,
                         duration, seen_incoming, created_at)
      VALUES (p_sid, v_account, v_hmac, v_enc, v_to, v_dir,
              CASE WHEN v_applied THEN p_status END, CASE WHEN v_applied THEN p_seq END,
              CASE WHEN v_applied THEN p_ts END, t.started, t.answered, t.ended,
              v_duration, false, p_now);
    END IF;
    ended_now := c.ended_at IS NULL AND t.ended IS NOT NULL;
    final_status := CASE WHEN v_applied THEN p_status ELSE c.status END;
    PERFORM ivr_queue_leaves(json_build_array(json_build_array(
                               'call.status', p_sid,
                               CASE WHEN v_applied THEN p_body_applied ELSE p_body_stored END)),
                             p_now, NULL, NULL);
    IF v_terminal THEN
      FOR r IN SELECT f.id, f.step FROM flow_runs f
                WHERE f.call_sid = p_sid AND NOT f.ended AND f.hangup_at IS NULL
                ORDER BY f.created_at, f.id FOR UPDATE LOOP
        UPDATE flow_runs SET hangup_at = p_now WHERE id = r.id;
        PERFORM ivr_queue_leaves(json_build_array(json_build_array(
                                   p_hangup_kind, p_sid,
                                   replace(p_hangup_body, p_run_needle,
                                           '"run":' || to_json(r.id)::text))),
                                 p_now, p_step_needle, '"step":' || (r.step + 1));
      END LOOP;
    END IF;
    outcome := CASE WHEN v_applied THEN 'applied' ELSE 'stored' END;
  END IF;
  INSERT INTO webhook_requests (path, call_sid, idempotency_token, received_at, outcome,
                                status_code, response)
  VALUES (p_path, p_sid, p_token, p_now, outcome, 200, NULL);
END $$;

-- /voice/recording: the event and the recording's metadata in Twilio's order.
CREATE OR REPLACE FUNCTION ivr_webhook_recording(p json, OUT outcome text, OUT response text)
LANGUAGE plpgsql AS $$
DECLARE
  p_token text;
  p_path text;
  p_now timestamptz;
  p_sid text;
  p_account text;
  p_recording text;
  p_status text;
  p_key text;
  p_data json;
  p_order jsonb;
  p_duration integer;
  p_channels integer;
  p_source text;
  p_track text;
  p_start timestamptz;
  p_url text;
  p_error text;
  p_body text;
BEGIN
  SELECT * INTO p_token, p_path, p_now, p_sid, p_account, p_recording, p_status, p_key, p_data, p_order, p_duration, p_channels, p_source, p_track, p_start, p_url, p_error, p_body
    FROM json_to_record(p) AS x(p_token text, p_path text, p_now timestamptz, p_sid text, p_account text, p_recording text, p_status text, p_key text, p_data json, p_order jsonb, p_duration integer, p_channels integer, p_source text, p_track text, p_start timestamptz, p_url text, p_error text, p_body text);
  IF p_token IS NOT NULL THEN
    SELECT w.response INTO response FROM webhook_requests w
     WHERE w.idempotency_token = p_token;
    IF FOUND THEN outcome := 'retry'; RETURN; END IF;
  END IF;
  INSERT INTO calls AS k (call_sid, account_sid, seen_incoming, created_at)
  VALUES (p_sid, p_account, false, p_now)
  ON CONFLICT (call_sid) DO UPDATE SET account_sid = EXCLUDED.account_sid
   WHERE coalesce(k.account_sid, '') = '' AND EXCLUDED.account_sid IS NOT NULL;
  IF EXISTS (SELECT 1 FROM call_events e WHERE e.call_sid = p_sid AND e.dedupe_key = p_key)
  THEN
    outcome := 'duplicate';
  ELSE
    INSERT INTO call_events (call_sid, kind, status, dedupe_key, sequence_number,
                             twilio_timestamp, received_at, data)
    VALUES (p_sid, 'recording', p_status, p_key, NULL, NULL, p_now, p_data);
    INSERT INTO recordings AS x (recording_sid, call_sid, status, duration, channels, source,
                                 track, start_time, url, error_code, updated_at)
    VALUES (p_recording, p_sid, p_status, p_duration, p_channels, p_source, p_track,
            p_start, p_url, p_error, p_now)
    ON CONFLICT (recording_sid) DO UPDATE SET
      status = EXCLUDED.status, duration = EXCLUDED.duration, channels = EXCLUDED.channels,
      source = EXCLUDED.source, track = EXCLUDED.track, start_time = EXCLUDED.start_time,
      url = EXCLUDED.url, error_code = EXCLUDED.error_code, updated_at = EXCLUDED.updated_at
    WHERE coalesce((p_order ->> EXCLUDED.status)::int, 0)
          >= coalesce((p_order ->> x.status)::int, 0);
    PERFORM ivr_queue_leaves(json_build_array(json_build_array('recording.status', p_sid,
                                                               p_body)), p_now, NULL, NULL);
    outcome := 'stored';
  END IF;
  INSERT INTO webhook_requests (path, call_sid, idempotency_token, received_at, outcome,
                                status_code, response)
  VALUES (p_path, p_sid, p_token, p_now, outcome, 200, NULL);
END $$;

CREATE OR REPLACE FUNCTION ivr_audit_integrate(p_batch integer, p_now timestamptz,
                                               OUT integrated integer, OUT size bigint)
LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
  peaks bytea[] := '{}';
  lvl integer := 0;
  idx bigint;
  h bytea;
  q record;
  done bigint[] := '{}';
BEGIN
  SELECT coalesce(max(seq), 0) INTO n FROM audit_log;
  -- The right edge of the tree of n leaves: one perfect subtree per bit of n.
  WHILE (n >> lvl) > 0 LOOP
    IF ((n >> lvl) & 1) = 1 THEN
      SELECT t.hash INTO h FROM audit_tree t WHERE t.level = lvl AND t.idx = (n >> lvl) - 1;
      IF NOT FOUND THEN
        RAISE EXCEPTION USING MESSAGE = 'audit_tree has no node (' || lvl || ', '
          || ((n >> lvl) - 1) || ') for a tree of ' || n || ' leaves';
      END IF;
      peaks[lvl] := h;
    END IF;
    lvl := lvl + 1;
  END LOOP;
  integrated := 0;
  FOR q IN SELECT a.id, a.kind, a.ref, a.body, a.queued_at FROM audit_queue a
            ORDER BY a.id LIMIT p_batch LOOP
    INSERT INTO audit_log (seq, prev_hash, body, hash, kind, ref, queued_at, integrated_at)
    VALUES (n + 1, NULL, q.body, NULL, q.kind, q.ref, q.queued_at, p_now);
    h := sha256('\x00'::bytea || convert_to(q.body, 'UTF8'));
    idx := n;
    lvl := 0;
    INSERT INTO audit_tree (level, idx, hash) VALUES (0, idx, h);
    WHILE (idx & 1) = 1 LOOP
      h := sha256('\x01'::bytea || peaks[lvl] || h);
      peaks[lvl] := NULL;
      idx := idx / 2;
      lvl := lvl + 1;
      INSERT INTO audit_tree (level, idx, hash) VALUES (lvl, idx, h);
    END LOOP;
    peaks[lvl] := h;
    n := n + 1;
    done := done || q.id;
    integrated := integrated + 1;
  END LOOP;
  DELETE FROM audit_queue WHERE id = ANY (done);
  size := n;
END $$;
