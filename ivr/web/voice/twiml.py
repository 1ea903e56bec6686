"""Engine actions to TwiML, only through twilio's VoiceResponse."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from twilio.twiml.voice_response import Dial as DialVerb
from twilio.twiml.voice_response import Gather as GatherVerb
from twilio.twiml.voice_response import Start, VoiceResponse

from ...domain.flow import engine as e
from ...domain.state_token import state_token

log = logging.getLogger("ivr.voice.twiml")  # the name logs have always carried

SAY_VOICES = {
    "tr": {"language": "tr-TR", "voice": "Polly.Filiz"},
    "en": {"language": "en-US", "voice": "Polly.Joanna"},
}


@dataclass
class Rendered:
    """TwiML plus what the caller will hear, for the record."""

    twiml: str
    played: list[dict] = field(default_factory=list)
    audio: dict[str, str | None] = field(default_factory=dict)


class TwimlRenderer:
    """Renders actions for one app: audio files under the public URL, <Say> otherwise."""

    def __init__(self, public_url: str, audio_library):
        self.public_url = public_url
        self.audio = audio_library

    def url(self, path: str) -> str:
        """An absolute URL under IVR_PUBLIC_URL."""
        return self.public_url + path

    def next_url(self, run_id: str, step: int, flow_version: str, state: e.State) -> str:
        """Where Twilio posts the result of the gather in this turn.

        The URL also carries the engine state, so that a call can go on while the
        database is unreachable (see ivr/services/offline.py); Twilio signs the URL, so the state
        cannot be forged.
        """
        token = state_token(flow_version, state)
        return self.url(f"/voice/gather?run={run_id}&step={step}&s={token}")

    def _prompt(self, verb, play: e.Play, out: Rendered) -> None:
        entry = self.audio.lookup(play.prompt, play.language, play.text)
        if entry is not None:
            verb.play(self.url(f"/audio/{entry.file}"))
        else:
            log.warning("no rendered audio for prompt=%s language=%s; using <Say>",
                        play.prompt, play.language)
            verb.say(play.text, **SAY_VOICES.get(play.language, SAY_VOICES["en"]))
        sha = entry.sha256 if entry else None
        out.played.append({"prompt": play.prompt, "language": play.language, "audio": sha})
        out.audio[play.prompt] = sha

    def render(self, actions, next_url: str) -> Rendered:
        """TwiML for one turn; `next_url` receives the next gather result."""
        r = VoiceResponse()
        out = Rendered(twiml="")
        for a in actions:
            if isinstance(a, e.Play):
                self._prompt(r, a, out)
            elif isinstance(a, e.StartRecording):
                start = Start()
                start.recording(
                    recording_status_callback=self.url("/voice/recording"),
                    recording_status_callback_event="in-progress completed absent",
                    recording_status_callback_method="POST",
                )
                r.append(start)
            elif isinstance(a, e.Gather):
                g = GatherVerb(input="dtmf", num_digits=1, timeout=a.timeout, action=next_url,
                               method="POST", action_on_empty_result=True, finish_on_key="")
                for p in a.prompts:
                    self._prompt(g, p, out)
                r.append(g)
            elif isinstance(a, e.Enqueue):
                r.enqueue(a.queue)
            elif isinstance(a, e.Dial):
                d = DialVerb()
                if a.client:
                    d.client(a.client)
                else:
                    d.number(a.number)
                r.append(d)
            elif isinstance(a, e.Hangup):
                r.hangup()
        out.twiml = str(r)
        return out


def apology_twiml() -> str:
    """Valid TwiML for when something went wrong: the caller is never left in silence."""
    r = VoiceResponse()
    r.say("Üzgünüz, şu anda teknik bir sorun yaşıyoruz. Lütfen daha sonra tekrar arayın.",
          **SAY_VOICES["tr"])
    r.say("We are sorry, we have a technical problem. Please call again later.",
          **SAY_VOICES["en"])
    r.hangup()
    return str(r)
