"""The domain layer: pure rules and vocabulary, with no web, database or Twilio code."""
