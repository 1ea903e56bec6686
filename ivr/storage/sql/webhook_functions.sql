-- The webhooks' writes: one function per webhook, one statement per webhook, every case.
--
-- Python plans everything that does not depend on the stored rows (the engine's step, the
-- TwiML, the audit leaves: ivr/services/webhooks.py) and passes it in as one JSON object,
-- unpacked into the variables its declaration lists (ivr/storage/webhook_functions.py
-- writes the /*ARGS:...*/ lines). Where a turn depends on what is stored (a caller's
-- standing grant, the language spoken earlier), Python plans each possibility and the
-- function picks the one that matches. A value only the database knows (the consent's id,
-- the caller as first seen, the agent of a transfer) stands in a leaf as a hole,
-- "key":"@@key@@", which ivr_fill replaces with the value's JSON.
--
-- Each function answers (outcome, response):
--   ok | applied | stored | duplicate: done, committed with the webhook's row;
--   repeat: this step was answered before (its TwiML again), nothing new stored;
--   retry: this idempotency token was answered before (the stored answer);
--   unknown: no such run or transfer for this call; behind: an earlier step is missing;
--   stale: the run (or transfer) is not as the request's URL says; `response` holds the
--          stored facts, to plan again from. Nothing was written.

-- A leaf body with its holes filled: `fills` maps a key to the JSON value it stands for.
CREATE OR REPLACE FUNCTION ivr_fill(body text, fills json) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  f record;
BEGIN
  IF fills IS NOT NULL AND strpos(body, '":"@@') > 0 THEN
    FOR f IN SELECT key, value FROM json_each(fills) LOOP
      body := replace(body, '"' || f.key || '":"@@' || f.key || '@@"',
                      '"' || f.key || '":' || f.value::text);
    END LOOP;
  END IF;
  RETURN body;
END $$;

-- Queue one audit leaf, its holes filled.
CREATE OR REPLACE FUNCTION ivr_queue_leaf(kind text, ref text, body text, at timestamptz,
                                          fills json)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF fills IS NOT NULL AND strpos(body, '":"@@') > 0 THEN
    body := ivr_fill(body, fills);
  END IF;
  INSERT INTO audit_queue (kind, ref, body, queued_at) VALUES (kind, ref, body, at);
END $$;

-- Queue audit leaves in their order: `leaves` is a JSON array of {"k": kind, "r": ref,
-- "b": body}, read once.
CREATE OR REPLACE FUNCTION ivr_queue_leaves(leaves json, at timestamptz, fills json)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  leaf record;
  body text;
BEGIN
  FOR leaf IN SELECT x.k, x.r, x.b
                 FROM ROWS FROM (json_to_recordset(leaves) AS (k text, r text, b text))
                      WITH ORDINALITY AS x(k, r, b, n)
                ORDER BY x.n LOOP
    body := leaf.b;
    IF fills IS NOT NULL AND strpos(body, '":"@@') > 0 THEN
      body := ivr_fill(body, fills);
    END IF;
    INSERT INTO audit_queue (kind, ref, body, queued_at) VALUES (leaf.k, leaf.r, body, at);
  END LOOP;
END $$;

-- Start <= answer <= end, keeping the later moment (Twilio's whole seconds against ours).
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

-- The call row, locked, created on first sight from any webhook; the caller and our number
-- are kept as first seen.
CREATE OR REPLACE FUNCTION ivr_call(p_sid text, p_account text, p_phone_hmac text,
                                    p_phone_enc text, p_to text, p_direction text,
                                    p_now timestamptz)
RETURNS calls LANGUAGE plpgsql AS $$
DECLARE
  c calls;
BEGIN
  SELECT * INTO c FROM calls WHERE call_sid = p_sid FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO calls (call_sid, account_sid, phone_hmac, phone_enc, to_number, direction,
                       seen_incoming, created_at)
    VALUES (p_sid, p_account, p_phone_hmac, CASE WHEN p_phone_hmac IS NOT NULL
                                                 THEN p_phone_enc END,
            p_to, p_direction, false, p_now)
    RETURNING * INTO c;
    RETURN c;
  END IF;
  IF coalesce(c.account_sid, '') = '' AND p_account IS NOT NULL
     OR c.phone_hmac IS NULL AND p_phone_hmac IS NOT NULL
     OR coalesce(c.to_number, '') = '' AND p_to IS NOT NULL
     OR coalesce(c.direction, '') = '' AND p_direction IS NOT NULL THEN
    UPDATE calls SET
      account_sid = coalesce(nullif(c.account_sid, ''), p_account),
      phone_hmac = coalesce(c.phone_hmac, p_phone_hmac),
      phone_enc = CASE WHEN c.phone_hmac IS NULL THEN p_phone_enc ELSE c.phone_enc END,
      to_number = coalesce(nullif(c.to_number, ''), p_to),
      direction = coalesce(nullif(c.direction, ''), p_direction)
    WHERE call_sid = p_sid RETURNING * INTO c;
  END IF;
  RETURN c;
END $$;

-- Whether this person's latest decision for at least one channel is a grant. (PL/pgSQL,
-- not SQL: its plan is kept for the session instead of made at every call.)
CREATE OR REPLACE FUNCTION ivr_has_grant(p_phone_hmac text, p_decisive text[],
                                         p_channels text[], p_granted text)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN p_phone_hmac IS NOT NULL AND EXISTS (
    SELECT 1 FROM (
      SELECT DISTINCT ON (ch.value) k.decision
        FROM consents k CROSS JOIN LATERAL json_array_elements_text(k.channels) ch
       WHERE k.phone_hmac = p_phone_hmac AND k.decision = ANY (p_decisive)
         AND ch.value = ANY (p_channels)
       ORDER BY ch.value, k.captured_at DESC, k.id DESC) latest
     WHERE latest.decision = p_granted);
END $$;

-- A flow version stored the first time a run uses it (`version_row` is NULL when this
-- worker knows it is stored).
CREATE OR REPLACE FUNCTION ivr_store_flow_version(version_row json, at timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF version_row IS NOT NULL THEN
    INSERT INTO flow_versions (version, flow_id, source, document, first_seen)
    VALUES (version_row ->> 'version', version_row ->> 'flow_id', version_row ->> 'source',
            version_row -> 'document', at)
    ON CONFLICT (version) DO NOTHING;
  END IF;
END $$;

-- A run's first turn: the run, turn 0 and its leaves (`plan` as ivr/services/webhooks.py
-- writes it, read once).
CREATE OR REPLACE FUNCTION ivr_start_run(p_run text, p_sid text, p_origin text,
                                         p_flow_id text, p_flow_version text,
                                         p_transfer_id text, p_agent_id text, plan json,
                                         fills json, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v record;
BEGIN
  SELECT * INTO v FROM json_to_record(plan)
    AS x(state json, ended boolean, heard json, notice json, actions json, twiml text,
         leaves json);
  INSERT INTO flow_runs (id, call_sid, origin, flow_id, flow_version, transfer_id, agent_id,
                         state, step, ended, hangup_at, heard, notice, created_at, updated_at)
  VALUES (p_run, p_sid, p_origin, p_flow_id, p_flow_version, p_transfer_id, p_agent_id,
          v.state, 0, v.ended, NULL, v.heard, v.notice, p_now, p_now);
  INSERT INTO flow_turns (run_id, step, input, actions, twiml, created_at)
  VALUES (p_run, 0, NULL, v.actions, v.twiml, p_now);
  PERFORM ivr_queue_leaves(v.leaves, p_now, fills);
END $$;

-- The webhook's own row: its path, idempotency token, outcome and answer.
CREATE OR REPLACE FUNCTION ivr_answered(p_path text, p_sid text, p_token text,
                                       p_now timestamptz, p_outcome text, p_response text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO webhook_requests (path, call_sid, idempotency_token, received_at, outcome,
                                status_code, response)
  VALUES (p_path, p_sid, p_token, p_now, p_outcome, 200, p_response);
END $$;

-- /voice/incoming: the call, the default flow's run and its first turn.
CREATE OR REPLACE FUNCTION ivr_webhook_incoming(p json, OUT outcome text, OUT response text)
LANGUAGE plpgsql AS $$
DECLARE
/*ARGS:ivr_webhook_incoming*/
  c calls;
  t record;
  plan json;
  v_grant boolean;
BEGIN
/*FILL:ivr_webhook_incoming*/
  IF p_token IS NOT NULL THEN
    SELECT w.response INTO response FROM webhook_requests w
     WHERE w.idempotency_token = p_token;
    IF FOUND THEN outcome := 'retry'; RETURN; END IF;
  END IF;
  INSERT INTO calls (call_sid, account_sid, phone_hmac, phone_enc, to_number, direction,
                     status, started_at, answered_at, seen_incoming, created_at)
  VALUES (p_sid, p_account, p_phone_hmac, p_phone_enc, p_to, p_direction, p_status,
          p_now, p_now, true, p_now)
  ON CONFLICT (call_sid) DO NOTHING
  RETURNING * INTO c;
  IF NOT FOUND THEN
    c := ivr_call(p_sid, p_account, p_phone_hmac, p_phone_enc, p_to, p_direction, p_now);
    IF NOT c.seen_incoming THEN
      t := ivr_ordered_times(coalesce(c.started_at, p_now), coalesce(c.answered_at, p_now),
                             c.ended_at);
      UPDATE calls SET seen_incoming = true, started_at = t.started,
                       answered_at = t.answered, ended_at = t.ended,
                       status = coalesce(c.status, p_status)
       WHERE call_sid = p_sid;
    END IF;
  END IF;
  SELECT u.twiml INTO response
    FROM flow_runs r JOIN flow_turns u ON u.run_id = r.id AND u.step = 0
   WHERE r.call_sid = p_sid AND r.origin = p_origin;
  IF FOUND THEN
    outcome := 'repeat';
  ELSE
    PERFORM ivr_store_flow_version(p_flow_row, p_now);
    v_grant := p_lookup AND ivr_has_grant(c.phone_hmac, p_decisive, p_channels, p_granted);
    plan := CASE WHEN v_grant THEN p_consenter ELSE p_plain END;
    PERFORM ivr_start_run(p_run, p_sid, p_origin, p_flow_id, p_flow_version, NULL, NULL, plan,
                          json_build_object('phone', c.phone_hmac, 'to', c.to_number,
                                            'direction', c.direction),
                          p_now);
    response := plan ->> 'twiml';
    outcome := CASE WHEN v_grant THEN 'ok-consenter' ELSE 'ok' END;
  END IF;
  PERFORM ivr_answered(p_path, p_sid, p_token, p_now, p_label, response);
END $$;

-- /voice/transfer: a transferred caller enters the transfer's flow.
CREATE OR REPLACE FUNCTION ivr_webhook_transfer(p json, OUT outcome text, OUT response text)
LANGUAGE plpgsql AS $$
DECLARE
/*ARGS:ivr_webhook_transfer*/
  c calls;
  x transfers;
  plan json;
  v_lang text;
  v_after text;
BEGIN
/*FILL:ivr_webhook_transfer*/
  IF p_token IS NOT NULL THEN
    SELECT w.response INTO response FROM webhook_requests w
     WHERE w.idempotency_token = p_token;
    IF FOUND THEN outcome := 'retry'; RETURN; END IF;
  END IF;
  SELECT * INTO x FROM transfers WHERE id = p_transfer_id FOR UPDATE;
  IF NOT FOUND OR x.call_sid <> p_sid THEN
    outcome := 'unknown'; RETURN;
  END IF;
  IF x.flow_id IS DISTINCT FROM p_flow_id OR x.language IS DISTINCT FROM p_language
     OR x.return_to::jsonb IS DISTINCT FROM p_return_to THEN
    outcome := 'stale';
    response := json_build_object('flow_id', x.flow_id, 'language', x.language,
                                  'return_to', x.return_to)::text;
    RETURN;
  END IF;
  c := ivr_call(p_sid, p_account, p_phone_hmac, p_phone_enc, p_to, p_direction, p_now);
  IF c.status IS NULL THEN
    UPDATE calls SET status = p_status WHERE call_sid = p_sid;
  END IF;
  SELECT u.twiml INTO response
    FROM flow_runs r JOIN flow_turns u ON u.run_id = r.id AND u.step = 0
   WHERE r.call_sid = p_sid AND r.origin = p_origin;
  IF FOUND THEN
    outcome := 'repeat';
  ELSE
    outcome := 'ok';
    PERFORM ivr_store_flow_version(p_flow_row, p_now);
    -- The transfer's language, else the one the caller last chose on this call.
    v_lang := coalesce(x.language, (SELECT r.state ->> 'language' FROM flow_runs r
                                     WHERE r.call_sid = p_sid
                                     ORDER BY r.updated_at DESC LIMIT 1));
    IF v_lang IS NULL OR p_plain -> v_lang IS NULL THEN
      v_lang := p_default_language;
    END IF;
    IF p_lookup AND ivr_has_grant(c.phone_hmac, p_decisive, p_channels, p_granted) THEN
      plan := p_consenter -> v_lang;
    ELSE
      plan := p_plain -> v_lang;
    END IF;
    PERFORM ivr_start_run(p_run, p_sid, p_origin, p_flow_id, p_flow_version, x.id,
                          x.agent_id, plan,
                          json_build_object('phone', c.phone_hmac, 'to', c.to_number,
                                            'direction', c.direction,
                                            'agent_id', x.agent_id),
                          p_now);
    response := plan ->> 'twiml';
  END IF;
  IF x.status = ANY (p_enters) THEN
    -- A "failed" transfer arriving here means Twilio acted although its answer to us was
    -- lost: the caller is in the flow, so that is the truth.
    v_after := CASE WHEN x.status = p_failed THEN x.failure_reason END;
    UPDATE transfers SET status = p_in_flow, in_flow_at = p_now, run_id = p_run
     WHERE id = x.id;
    PERFORM ivr_queue_leaves(p_in_flow_leaves, p_now,
                             json_build_object('agent_id', x.agent_id,
                                               'after_failure', v_after));
  END IF;
  PERFORM ivr_answered(p_path, p_sid, p_token, p_now, p_label, response);
END $$;

-- /voice/gather: the run's next turn; a step taken before is answered again.
CREATE OR REPLACE FUNCTION ivr_webhook_gather(p json, OUT outcome text, OUT response text)
LANGUAGE plpgsql AS $$
DECLARE
/*ARGS:ivr_webhook_gather*/
  r flow_runs;
  x transfers;
  v record;
  d record;
  v_hmac text;
  v_enc text;
  v_id bigint;
  v_decision text;
  v_move text;
BEGIN
/*FILL:ivr_webhook_gather*/
  IF p_token IS NOT NULL THEN
    SELECT w.response INTO response FROM webhook_requests w
     WHERE w.idempotency_token = p_token;
    IF FOUND THEN outcome := 'retry'; RETURN; END IF;
  END IF;
  SELECT * INTO r FROM flow_runs WHERE id = p_run FOR UPDATE;
  IF NOT FOUND OR r.call_sid <> p_sid THEN
    outcome := 'unknown'; RETURN;
  END IF;
  IF p_step > r.step + 1 THEN
    outcome := 'behind'; RETURN;
  END IF;
  IF p_step IS NOT NULL AND p_step <= r.step OR (r.state ->> 'ended')::boolean THEN
    -- A retry of a step already taken, or a run that has ended: the same answer again.
    SELECT u.twiml INTO response FROM flow_turns u
     WHERE u.run_id = r.id AND u.step = CASE WHEN p_step <= r.step THEN p_step ELSE r.step END;
    IF NOT FOUND THEN
      SELECT u.twiml INTO response FROM flow_turns u WHERE u.run_id = r.id AND u.step = r.step;
    END IF;
    outcome := 'repeat';
    PERFORM ivr_answered(p_path, p_sid, p_token, p_now, p_label, response);
    RETURN;
  END IF;
  IF p_step IS NULL OR r.flow_version <> p_flow_version
     OR r.state::jsonb IS DISTINCT FROM p_state_before
     OR r.heard::jsonb IS DISTINCT FROM p_heard_before
     OR r.notice::jsonb IS DISTINCT FROM p_notice_before
     OR r.transfer_id IS DISTINCT FROM p_transfer_id THEN
    outcome := 'stale';
    response := json_build_object('step', r.step, 'flow_version', r.flow_version,
                                  'state', r.state, 'heard', r.heard, 'notice', r.notice,
                                  'transfer_id', r.transfer_id)::text;
    RETURN;
  END IF;
  SELECT * INTO v FROM json_to_record(p_plan)
    AS x(state json, ended boolean, heard json, notice json, input json, actions json,
         twiml text, leaves json);
  UPDATE flow_runs SET state = v.state, step = p_step, ended = v.ended, updated_at = p_now,
                       heard = v.heard, notice = v.notice
   WHERE id = p_run;
  INSERT INTO flow_turns (run_id, step, input, actions, twiml, created_at)
  VALUES (p_run, p_step, v.input, v.actions, v.twiml, p_now);
  IF p_consent IS NOT NULL THEN
    SELECT k.phone_hmac, k.phone_enc INTO v_hmac, v_enc FROM calls k
     WHERE k.call_sid = p_sid;
    SELECT * INTO d FROM json_to_record(p_consent)
      AS x(decision text, purpose text, channels json, digits text, language text,
           notice_version text, audio json);
    v_decision := d.decision;
    INSERT INTO consents (run_id, call_sid, phone_hmac, phone_enc, purpose, channels,
                          decision, digits, language, notice_version, flow_version,
                          captured_at, agent_id, transfer_id, source, reason, audio,
                          idempotency_key)
    VALUES (p_run, p_sid, v_hmac, v_enc, d.purpose, d.channels, d.decision, d.digits,
            d.language, d.notice_version, r.flow_version, p_now, r.agent_id,
            r.transfer_id, 'ivr', NULL, d.audio, NULL)
    RETURNING id INTO v_id;
  END IF;
  PERFORM ivr_queue_leaves(v.leaves, p_now,
                           json_build_object('consent_id', v_id, 'phone', v_hmac,
                                             'agent_id', r.agent_id));
  IF r.transfer_id IS NOT NULL THEN
    -- The transfer follows its run: decided, then returned.
    SELECT * INTO x FROM transfers WHERE id = r.transfer_id FOR UPDATE;
    IF FOUND THEN
      FOREACH v_move IN ARRAY p_transfer_moves LOOP
        IF NOT (p_moves -> x.status) ? v_move THEN
          RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'a transfer cannot move from ' || x.status || ' to ' || v_move;
        END IF;
        x.status := v_move;
      END LOOP;
      v_id := coalesce(v_id, (SELECT k.id FROM consents k WHERE k.run_id = r.id));
      UPDATE transfers SET
        run_id = coalesce(run_id, r.id),
        status = x.status,
        in_flow_at = CASE WHEN cardinality(p_transfer_moves) > 0
                          THEN coalesce(in_flow_at, p_now) ELSE in_flow_at END,
        consent_id = CASE WHEN p_decided = ANY (p_transfer_moves) THEN v_id
                          ELSE consent_id END,
        decision = CASE WHEN p_decided = ANY (p_transfer_moves)
                        THEN v_decision ELSE decision END,
        decided_at = CASE WHEN p_decided = ANY (p_transfer_moves) THEN p_now
                          ELSE decided_at END,
        returned_at = CASE WHEN p_returned = ANY (p_transfer_moves) THEN p_now
                           ELSE returned_at END
       WHERE id = r.transfer_id;
      PERFORM ivr_queue_leaves(p_transfer_leaves, p_now,
                               json_build_object('agent_id', x.agent_id, 'consent_id', v_id));
    END IF;
  END IF;
  outcome := 'ok';
  response := v.twiml;
  PERFORM ivr_answered(p_path, p_sid, p_token, p_now, p_label, response);
END $$;

-- /voice/status: the event, the call's times and status in Twilio's order; at the end of
-- the call, its open runs hang up and its transfers on their way fail.
CREATE OR REPLACE FUNCTION ivr_webhook_status(p json, OUT outcome text, OUT response text,
                                              OUT ended_now boolean, OUT final_status text)
LANGUAGE plpgsql AS $$
DECLARE
/*ARGS:ivr_webhook_status*/
  c calls;
  v_event timestamptz;
  v_started timestamptz; v_answered timestamptz; v_ended timestamptz;
  v_duration integer;
  t record;
  r record;
  x record;
  v_applied boolean;
  v_terminal boolean;
BEGIN
/*FILL:ivr_webhook_status*/
  v_terminal := p_status = ANY (p_terminal);
  ended_now := false;
  IF p_token IS NOT NULL THEN
    SELECT w.response INTO response FROM webhook_requests w
     WHERE w.idempotency_token = p_token;
    IF FOUND THEN outcome := 'retry'; RETURN; END IF;
  END IF;
  c := ivr_call(p_sid, p_account, p_phone_hmac, p_phone_enc, p_to, p_direction, p_now);
  IF EXISTS (SELECT 1 FROM call_events e WHERE e.call_sid = p_sid AND e.dedupe_key = p_key)
  THEN
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
    UPDATE calls SET started_at = t.started, answered_at = t.answered, ended_at = t.ended,
                     duration = v_duration,
                     status = CASE WHEN v_applied THEN p_status ELSE status END,
                     status_seq = CASE WHEN v_applied THEN p_seq ELSE status_seq END,
                     status_at = CASE WHEN v_applied THEN p_ts ELSE status_at END
     WHERE call_sid = p_sid;
    ended_now := c.ended_at IS NULL AND t.ended IS NOT NULL;
    final_status := CASE WHEN v_applied THEN p_status ELSE c.status END;
    PERFORM ivr_queue_leaf('call.status', p_sid,
                           CASE WHEN v_applied THEN p_body_applied ELSE p_body_stored END,
                           p_now, NULL);
    IF v_terminal THEN
      -- A hang-up is never a consent: the open runs are marked, each with its leaf.
      FOR r IN SELECT f.id, f.step FROM flow_runs f
                WHERE f.call_sid = p_sid AND NOT f.ended AND f.hangup_at IS NULL
                ORDER BY f.created_at, f.id FOR UPDATE LOOP
        UPDATE flow_runs SET hangup_at = p_now WHERE id = r.id;
        PERFORM ivr_queue_leaf('input.received', p_sid, p_hangup_body, p_now,
                               json_build_object('run', r.id, 'step', r.step + 1));
      END LOOP;
      -- The call's transfers still on their way fail.
      FOR x IN SELECT * FROM transfers y
                WHERE y.call_sid = p_sid AND y.status = ANY (p_active_transfers)
                ORDER BY y.requested_at FOR UPDATE LOOP
        UPDATE transfers SET status = p_failed, failed_at = p_now,
                             failure_reason = (p_transfer_failures -> x.status) ->> 'reason',
                             failure_message = (p_transfer_failures -> x.status) ->> 'message',
                             twilio_code = NULL, failure_status = 409
         WHERE id = x.id;
        PERFORM ivr_queue_leaf('transfer.failed', p_sid,
                               (p_transfer_failures -> x.status) ->> 'body', p_now,
                               json_build_object('transfer_id', x.id, 'agent_id', x.agent_id));
      END LOOP;
    END IF;
    outcome := CASE WHEN v_applied THEN 'applied' ELSE 'stored' END;
  END IF;
  PERFORM ivr_answered(p_path, p_sid, p_token, p_now,
                       CASE WHEN p_label = 'spooled' THEN p_label ELSE outcome END, NULL);
END $$;

-- /voice/recording: the event and the recording's metadata in Twilio's order.
CREATE OR REPLACE FUNCTION ivr_webhook_recording(p json, OUT outcome text, OUT response text)
LANGUAGE plpgsql AS $$
DECLARE
/*ARGS:ivr_webhook_recording*/
BEGIN
/*FILL:ivr_webhook_recording*/
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
    PERFORM ivr_queue_leaf('recording.status', p_sid, p_body, p_now, NULL);
    outcome := 'stored';
  END IF;
  PERFORM ivr_answered(p_path, p_sid, p_token, p_now,
                       CASE WHEN p_label = 'spooled' THEN p_label ELSE outcome END, NULL);
END $$;
