"""The tamper-evident audit log, pure: entry and Merkle hashes, proofs, signed notes and keys,
verification over iterables and replay. Keys come as arguments; no database, no app."""
