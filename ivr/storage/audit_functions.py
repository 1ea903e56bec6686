"""The sequencer's integration pass as one PostgreSQL function.

`ivr_audit_integrate(batch, now)` is the pass of ivr/services/audit_sequencer.py: it takes
the oldest queued leaves, gives each the next index, hashes it
(RFC 9162: SHA-256(0x00 || body)), stores the new nodes of the Merkle tree
(SHA-256(0x01 || left || right)) and removes the leaves from the queue. Hashing in the
server's C code, in one statement, keeps the sequencer off the workers' Python time (a
pass in a busy worker waited behind its request threads for the GIL). `audit verify`
recomputes every leaf and node in Python, so a node this function got wrong is found.
Created by migration 0007 and by `Database.create_all`, as the webhooks' functions.
"""

from __future__ import annotations

from .server_functions import ServerFunctions

NAMES = ("ivr_audit_integrate",)

_SQL = r"""
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
"""

_DROP = "DROP FUNCTION IF EXISTS ivr_audit_integrate;"


_FUNCTIONS = ServerFunctions(_SQL, _DROP)
create_statements = _FUNCTIONS.create_statements
drop_statements = _FUNCTIONS.drop_statements
install = _FUNCTIONS.install
