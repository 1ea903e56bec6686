"""The tamper-evident audit log: hash chain, verification, checkpoints and replay."""
