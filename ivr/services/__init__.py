"""The services layer: what the service does (calls, consents, transfers, offline answers and
spool replay, reports, accounts, KVKK operations), each verb in the caller's transaction."""
