"""The adapters layer: what talks to the outside (Twilio's REST API, İYS, the TTS engines, the
simulated caller and the development Twilio stand-in)."""
