"""The dashboard's period form: since, until and step parsed into a Period, every bad field
named in the auditor's language. The figures are ivr/services/auditor/dashboard_figures.py."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

from flask_babel import gettext as _

from ivr.domain import inputs
from ivr.services.auditor.dashboard_figures import Period, day_text

from .timefmt import LOCAL

STEPS = ("day", "week")
DEFAULT_DAYS = 30
MAX_DAYS = {"day": 366, "week": 366 * 3}


class PeriodError(ValueError):
    """The period form is not valid; `errors` maps field to message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def parse_day(value: str) -> date:
    """A day written dd.mm.yyyy (as shown) or yyyy-mm-dd (as a date input sends it)."""
    value = value.strip()
    if "." in value:
        return datetime.strptime(value, "%d.%m.%Y").date()
    return date.fromisoformat(value)


def local_today() -> date:
    """Today in Istanbul."""
    return datetime.now(LOCAL).date()


def parse_period(args: Mapping[str, str], today: date) -> Period:
    """The period from a query's since/until/step; the last 30 days by default. Days follow
    the API's rules (ivr/domain/inputs.py): an open end far out is clamped to the first or
    last day held, a start after the last day or an end before the first is refused."""
    errors: dict[str, str] = {}
    days = {}
    for name, default in (("since", today - timedelta(days=DEFAULT_DAYS - 1)),
                          ("until", today)):
        raw = (args.get(name) or "").strip()
        try:
            days[name] = (inputs.held_day(parse_day(raw), name, end=name == "until")
                          if raw else default)
        except inputs.InvalidInput:
            errors[name] = _("Use a day from %(first)s to %(last)s.",
                             first=day_text(inputs.FIRST_DAY), last=day_text(inputs.LAST_DAY))
            days[name] = default
        except ValueError:
            errors[name] = _("Write the day as dd.mm.yyyy, for example 01.03.2026.")
            days[name] = default
    step = (args.get("step") or "day").strip()
    if step not in STEPS:
        errors["step"] = _("Choose per day or per week.")
        step = "day"
    if not errors and days["since"] > days["until"]:
        errors["until"] = _("The last day must not be before the first day.")
    if not errors and (days["until"] - days["since"]).days >= MAX_DAYS[step]:
        errors["since"] = _("The period is too long for this step: at most 366 days per day, "
                             "or about three years per week.")
    if errors:
        raise PeriodError(errors)
    return Period(days["since"], days["until"], step)
