"""The audio pipeline's own exception types."""

from __future__ import annotations


class AudioError(Exception):
    """Base class for every error raised by the audio pipeline."""


class EngineError(AudioError):
    """A speech engine could not render a text (the reason says why)."""


class EngineUnavailable(EngineError):
    """A speech engine cannot be used at all: unreachable, not installed, no such voice."""


class ProcessingError(AudioError):
    """Rendered speech could not be turned into a telephone prompt that meets the targets."""


class AudioBuildError(AudioError):
    """One prompt failed to build: names the flow, prompt and language, and the reason."""

    def __init__(self, flow: str, prompt_id: str, language: str, reason: str):
        self.flow, self.prompt_id, self.language, self.reason = flow, prompt_id, language, reason
        super().__init__(f"prompt '{prompt_id}' ({language}) of flow '{flow}': {reason}")
