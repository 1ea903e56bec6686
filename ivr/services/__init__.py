"""The services layer: what the service does (calls, consents, transfers, offline answers and
spool replay, reports, accounts, KVKK operations, the audit log's sequencer, verify and
replay), each verb in the caller's transaction."""
