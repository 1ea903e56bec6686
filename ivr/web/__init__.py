"""The web layer: Flask blueprints (voice webhooks, API, auditor and agent pages, audio files,
health, metrics), request security, rate limits and the webhook unit of work."""
