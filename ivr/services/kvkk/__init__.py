"""KVKK operations: withdrawals, per-channel status, subject requests and reports, retention
and the İYS export."""
