"""The domain layer: the flow engine, the shared vocabulary, KVKK and İYS rules, personal-data
and time helpers, and the typed commands a Twilio form becomes. No Flask, SQLAlchemy or Twilio."""
