"""`python -m ivr audio build`: render the prompts of the flows into audio/."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app, has_app_context

from ivr.adapters.audio.build import build
from ivr.adapters.audio.engines import ENGINE_CHOICES, gtts_url
from ivr.adapters.audio.errors import AudioError
from ivr.domain import config
from ivr.domain.flow import Flow, InvalidFlow, load_flows


def _settings() -> dict:
    """The app's configuration inside an app context, else the environment's."""
    if has_app_context():
        return current_app.config

    return config.from_env()


@click.group("audio")
def audio():
    """Prompt audio: render the flows' prompts to 8 kHz μ-law WAV files."""


@audio.command("build")
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="auto", show_default=True,
              help="gtts (production, needs Google), offline (espeak-ng), or auto: gTTS when "
                   "it answers within ~2 s, offline otherwise.")
@click.option("--flow", "flow_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Flow file to render (repeatable). Default: every flow in FLOWS_DIR.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar while rendering.")
def build_command(engine: str, flow_files: tuple[Path, ...], progress: bool):
    """Render every prompt of every flow, in every language, into AUDIO_DIR."""

    cfg = _settings()
    flows: list[Path] | dict[str, Flow]
    try:
        if flow_files:
            flows, prune = list(flow_files), False
        else:
            flows, prune = load_flows(cfg["FLOWS_DIR"]), True
            if not flows:
                raise click.ClickException(f"no flows in {cfg['FLOWS_DIR']}")
        build(flows, cfg["AUDIO_DIR"], engine=engine, progress=progress,
              gtts_url=gtts_url(cfg), prune=prune, echo=click.echo)
    except (AudioError, InvalidFlow) as e:
        raise click.ClickException(str(e)) from None
