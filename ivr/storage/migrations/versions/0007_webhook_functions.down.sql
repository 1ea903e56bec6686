DROP FUNCTION IF EXISTS ivr_webhook_incoming, ivr_webhook_gather, ivr_webhook_status,
  ivr_webhook_recording, ivr_queue_leaves, ivr_ordered_times;
DROP FUNCTION IF EXISTS ivr_audit_integrate;
