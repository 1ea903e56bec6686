"""A turn's TwiML is rendered once per loaded audio set and reused with each call's own
gather URL: the reused TwiML is byte for byte what rendering it afresh gives."""

from __future__ import annotations

from ivr.adapters.audio.catalog import AudioEntry
from ivr.domain.flow import engine as e
from ivr.web.voice.twiml import TwimlRenderer


class _Library:
    def __init__(self):
        self.generation = 1
        self.lookups = 0

    def current_generation(self):
        return self.generation

    def lookup(self, prompt, language, text):
        self.lookups += 1
        if prompt == "greeting":
            return AudioEntry(file=f"{self.generation:064d}.wav", sha256="a" * 64,
                              duration_ms=900)
        return None


ACTIONS = [e.Play("greeting", "tr", "Hoş geldiniz."), e.StartRecording(),
           e.Gather(prompts=(e.Play("question", "tr", "1'e basın <ya da> 2'ye & \"9\"."),),
                    timeout=6, node="consent")]


def test_a_cached_turn_is_what_a_fresh_render_gives():
    library = _Library()
    renderer = TwimlRenderer("https://ivr.example", library)
    url = 'https://ivr.example/voice/gather?run=r1&step=1&s=abc_-"<x>'
    first = renderer.render(ACTIONS, url)
    lookups = library.lookups
    again = renderer.render(ACTIONS, url + "2")
    assert library.lookups == lookups  # not rendered again
    assert first.twiml == renderer._render(ACTIONS, url).twiml
    assert again.twiml == renderer._render(ACTIONS, url + "2").twiml
    assert first.audio == {"greeting": "a" * 64, "question": None}


def test_new_audio_renders_the_turn_again():
    library = _Library()
    renderer = TwimlRenderer("https://ivr.example", library)
    before = renderer.render(ACTIONS, "https://ivr.example/g").twiml
    library.generation = 2
    after = renderer.render(ACTIONS, "https://ivr.example/g").twiml
    assert before != after and f"{2:064d}.wav" in after
