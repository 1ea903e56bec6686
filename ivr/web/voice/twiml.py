"""Engine actions to TwiML, only through twilio's VoiceResponse."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from twilio.twiml.voice_response import Dial as DialVerb
from twilio.twiml.voice_response import Gather as GatherVerb
from twilio.twiml.voice_response import Start, VoiceResponse

from ivr.domain.flow import engine as e
from ivr.domain.state_token import state_token

log = logging.getLogger("ivr.voice.twiml")  # the name logs have always carried

SAY_VOICES = {
    "tr": {"language": "tr-TR", "voice": "Polly.Filiz"},
    "en": {"language": "en-US", "voice": "Polly.Joanna"},
}


# Where the next gather's URL goes in a turn's cached TwiML (a URL never contains it).
NEXT_URL = "@@ivr-next-gather-url@@"
_CACHE_MAX = 2048  # turns kept per process; a flow has a few dozen per version and language


@dataclass
class Rendered:
    """TwiML plus what the caller will hear, for the record."""

    twiml: str
    played: list[dict] = field(default_factory=list)
    audio: dict[str, str | None] = field(default_factory=dict)


def xml_attribute(value: str) -> str:
    """`value` escaped as ElementTree escapes an attribute (what VoiceResponse writes)."""
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\r", "&#13;").replace("\n", "&#10;")
            .replace("\t", "&#09;"))


class TwimlRenderer:
    """Renders actions for one app: audio files under the public URL, <Say> otherwise.

    A turn's TwiML depends only on its actions (the flow version and language are in them)
    and on the audio files loaded, except for the next gather's URL: `turn` renders each
    distinct turn once per loaded audio set and keeps it, with NEXT_URL where the URL goes.
    """

    NEXT_URL = NEXT_URL

    def __init__(self, public_url: str, audio_library):
        self.public_url = public_url
        self.audio = audio_library
        self._turns: dict[tuple, Rendered] = {}

    def url(self, path: str) -> str:
        """An absolute URL under IVR_PUBLIC_URL."""
        return self.public_url + path

    def next_url(self, run_id: str, step: int, flow_version: str, state: e.State,
                 memory: dict | None = None) -> str:
        """Where Twilio posts the result of the gather in this turn.

        The URL also carries the engine state, so that a call can go on while the
        database is unreachable (see ivr/services/offline.py); Twilio signs the URL, so the state
        cannot be forged.
        """
        token = state_token(flow_version, state, memory)
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
        turn = self.turn(actions)
        return Rendered(self.finish(turn, next_url), list(turn.played), dict(turn.audio))

    def turn(self, actions) -> Rendered:
        """The turn's TwiML with NEXT_URL for the next gather's URL (see `finish`), what it
        plays and its audio; shared between requests, so never change what it holds."""
        key = (self.audio.current_generation(), tuple(actions))
        try:
            cached = self._turns.get(key)
        except TypeError:  # an action that cannot be a key: render it every time
            return self._render(actions, NEXT_URL)
        if cached is None:
            cached = self._render(actions, NEXT_URL)
            if len(self._turns) >= _CACHE_MAX:
                self._turns.clear()
            self._turns[key] = cached
        return cached

    @staticmethod
    def finish(turn: Rendered, next_url: str) -> str:
        """The turn's TwiML with the next gather's URL in its place."""
        return turn.twiml.replace(NEXT_URL, xml_attribute(next_url))

    def _render(self, actions, next_url: str) -> Rendered:
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
