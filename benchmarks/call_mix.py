"""The calls `consent_calls.py` places: today's fresh caller, and the mix of a call center in
its second year (`--mix`), each call signed exactly as Twilio signs it.

The mix, in exact proportions (a smooth weighted round robin, so a run of 20 calls holds
every kind):

- 50% returning callers: a number with a stored decision, lent to one call at a time. One
  in five holds a grant and withdraws it (key 3 or 2 at the withdrawal question); the others
  keep it (key 1, or silence three times: the earlier choice stands) or, without a grant,
  decide again (key 1 or 2).
- 30% fresh callers: a new number grants or declines.
- 10% hang up during the notice: `/voice/incoming`, then the `completed` status callback.
- 5% transfers: an agent sends a live call into the flow through `POST /api/transfers`; the
  IVR's real Twilio REST client redirects it at `LiveTwilio` (the project's Twilio stand-in
  on loopback), "Twilio" fetches the transfer TwiML, the caller decides, hears the return
  (`<Enqueue>`), the agent reads the transfer back, and the call ends.
- 5% Twilio retries: a fresh call with one webhook (incoming, gather or status, in turn) sent
  twice with the same I-Twilio-Idempotency-Token; the second answer must be the first.

Numbers are valid Turkish mobile numbers in E.164 (+90 53x xxx xx xx), unique per run: each
load-generator process numbers its callers in a space of its own.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from queue import Empty

from ivr.adapters.twilio_standin import CALL_PATH, TwilioStandIn

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_SID = "AC" + "0" * 32  # the app's default TWILIO_ACCOUNT_SID
RETURN_QUEUE = "bench"
# Scenario → weight in the mix (out of 100).
MIX = {"returning": 50, "fresh": 30, "hangup": 10, "transfer": 5, "retry": 5}
WITHDRAW_EVERY = 5  # one returning caller in five withdraws
SILENT_EVERY = 10  # one grant holder in ten who keeps it says nothing (no_input, kept)
# The labels latencies are kept under, in the order they are printed.
LABELS = ("/voice/incoming", "/voice/gather", "/voice/status", "/voice/transfer",
          "POST /api/transfers", "GET /api/transfers/<id>", "/voice/incoming (retry)",
          "/voice/gather (retry)", "/voice/status (retry)")
SCENARIOS = ("returning: withdraws", "returning: keeps", "returning: keeps (silence)",
             "returning: decides again", "fresh", "hang-up in the notice", "transfer",
             "Twilio retry")


class CallFailed(Exception):
    """One call went wrong; its kind is counted as an error."""


class Stats:
    """What one load generator saw inside the measurement window."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end
        self.latency: dict[str, list[float]] = {}
        self.requests = 0
        self.calls = 0
        self.errors: dict[str, int] = {}
        self.total_calls = 0  # complete calls, in or out of the window
        self.total_requests = 0
        self.scenarios: Counter = Counter()  # complete calls in the window, per scenario
        self.decisions: Counter = Counter()  # every complete call's decision ("none": no decision)

    def sample(self, path: str, began: float, done: float) -> None:
        self.total_requests += 1
        if self.start <= done <= self.end:
            self.requests += 1
            self.latency.setdefault(path, []).append(done - began)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def call_done(self, done: float, scenario: str = "fresh",
                  decision: str | None = "granted") -> None:
        self.total_calls += 1
        self.decisions[decision or "none"] += 1
        if self.start <= done <= self.end:
            self.calls += 1
            self.scenarios[scenario] += 1


# --- numbers and the returning callers ----------------------------------------------------

class Numbers:
    """Unique Turkish mobile numbers, +90 53S SSN NNNN: S is this process's space (0-999)."""

    def __init__(self, space: int):
        if not 0 <= space < 1000:
            raise ValueError(f"number space {space} is not 0-999")
        self.space, self.n = space, 0

    def next(self) -> str:
        if self.n >= 100_000:
            raise CallFailed("number space exhausted")
        self.n += 1
        return f"+9053{self.space:03d}{self.n - 1:05d}"


class Pool:
    """Returning callers: number → whether it holds a standing grant. A number is lent to one
    call at a time and comes back with its new standing; a failed call's number is dropped
    (what it stored is not known)."""

    def __init__(self, standing: dict[str, bool]):
        self.free: dict[bool, list[str]] = {True: [], False: []}
        for number, grant in standing.items():
            self.free[bool(grant)].append(number)

    def lend(self, rng, grant: bool | None) -> tuple[str, bool] | None:
        """A free number (holding a grant, not holding one, or either); None if none is."""
        if grant is None:
            n = len(self.free[True]) + len(self.free[False])
            if not n:
                return None
            grant = rng.randrange(n) < len(self.free[True])
        free = self.free[grant]
        if not free:
            return None
        i = rng.randrange(len(free))
        free[i], free[-1] = free[-1], free[i]
        return free.pop(), grant

    def give_back(self, number: str, grant: bool) -> None:
        self.free[grant].append(number)

    def standing(self) -> dict[str, bool]:
        return {n: g for g in (True, False) for n in self.free[g]}

    def __len__(self) -> int:
        return len(self.free[True]) + len(self.free[False])


def standing_after(decision: str | None, before: bool) -> bool:
    """Whether the number holds a grant after the call: silence changes nothing."""
    return before if decision in (None, "no_input") else decision == "granted"


class Mix:
    """The next scenario, in exact proportions (smooth weighted round robin)."""

    def __init__(self, weights: dict[str, int]):
        self.weights = weights
        self.current = dict.fromkeys(weights, 0)
        self.total = sum(weights.values())

    def next(self) -> str:
        for k, w in self.weights.items():
            self.current[k] += w
        best = max(self.current, key=self.current.get)
        self.current[best] -= self.total
        return best


# --- requests ----------------------------------------------------------------------------

@dataclass
class Driver:
    """One load generator's connection, keys and callers."""

    http: object  # aiohttp.ClientSession
    validator: object  # twilio RequestValidator
    base: str
    stats: Stats
    apology: str
    rng: object  # random.Random
    numbers: Numbers
    pool: Pool = field(default_factory=lambda: Pool({}))
    agents: list[str] = field(default_factory=list)
    twilio: str = ""  # LiveTwilio's URL
    mix: Mix = field(default_factory=lambda: Mix(MIX))
    returning_seen: int = 0
    keepers_seen: int = 0
    retries_seen: int = 0
    pool_misses: int = 0


async def post(d: Driver, url: str, data: dict, label: str, expect: int = 200,
               token: str | None = None) -> str:
    """A webhook as Twilio sends it (signed, with an idempotency token); the body."""
    headers = {"X-Twilio-Signature": d.validator.compute_signature(url, data),
               "I-Twilio-Idempotency-Token": token or secrets.token_hex(16),
               "User-Agent": "TwilioProxy/1.1"}
    return (await _request(d, "POST", url, label, expect, data=data, headers=headers))[1]


async def _request(d: Driver, method: str, url: str, label: str, expect: int,
                   **kwargs) -> tuple[int, str]:
    began = time.time()
    try:
        async with d.http.request(method, url, allow_redirects=False, **kwargs) as r:
            body = await r.text()
            status = r.status
    except TimeoutError:
        raise CallFailed(f"{label} timeout") from None
    except Exception as e:  # any transport failure is one counted error
        raise CallFailed(f"{label} {type(e).__name__}") from None
    done = time.time()
    if status != expect:
        raise CallFailed(f"{label} HTTP {status}")
    d.stats.sample(label, began, done)
    return status, body


async def _api(d: Driver, method: str, path: str, label: str, expect: int, token: str,
               **kwargs) -> dict:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    _, body = await _request(d, method, d.base + path, label, expect, headers=headers,
                             **kwargs)
    try:
        return json.loads(body)
    except ValueError:
        raise CallFailed(f"{label} answered no JSON") from None


def _twiml(body: str, label: str, apology: str) -> ET.Element:
    if body == apology:
        raise CallFailed(f"{label} answered the apology")
    try:
        root = ET.fromstring(body)  # TwiML from the server under test
    except ET.ParseError:
        raise CallFailed(f"{label} answered invalid XML") from None
    if root.tag != "Response":
        raise CallFailed(f"{label} answered no TwiML")
    return root


def gather_action(body: str, label: str, apology: str) -> str:
    """The action of the answer's <Gather> (the question is asked)."""
    gather = _twiml(body, label, apology).find("Gather")
    if gather is None or "/voice/gather?" not in gather.get("action", ""):
        raise CallFailed(f"{label} answered no <Gather>")
    return gather.get("action")


def _ends(body: str, label: str, apology: str, end: str) -> None:
    """The answer confirms the decision and ends the turn with <end> (no more questions)."""
    root = _twiml(body, label, apology)
    if root.find("Gather") is not None or root.find(end) is None:
        raise CallFailed(f"{label} answered no decision with <{end}>")


def call_params(number: str) -> dict:
    """The form Twilio posts for a new inbound call."""
    return {"CallSid": "CA" + secrets.token_hex(16), "AccountSid": ACCOUNT_SID,
            "From": number, "To": "+902122223344", "CallStatus": "ringing",
            "ApiVersion": "2010-04-01", "Direction": "inbound"}


def completed(params: dict, seconds: int) -> dict:
    """The `completed` status callback of the call."""
    return {**params, "CallStatus": "completed", "SequenceNumber": "0",
            "CallDuration": str(seconds), "CallbackSource": "call-progress-events",
            "Timestamp": format_datetime(datetime.now(UTC), usegmt=True)}


DECISION = {"1": "granted", "2": "declined"}


async def _twice(d: Driver, url: str, data: dict, label: str) -> str:
    """Twilio retries: the same webhook, the same token; the stored answer must come back."""
    token = secrets.token_hex(16)
    first = await post(d, url, data, label, token=token)
    again = await post(d, url, data, f"{label} (retry)", token=token)
    if again != first:
        raise CallFailed(f"{label} (retry) answered differently from the first")
    return first


async def inbound(d: Driver, number: str, keys: list[str], retry: str | None = None) -> None:
    """incoming → each key at the question ('' is silence) → status `completed`; `retry`
    names the webhook Twilio delivers twice."""
    params = call_params(number)

    async def send(url, data, label):
        if label == retry:
            return await _twice(d, url, data, label)
        return await post(d, url, data, label)

    body = await send(d.base + "/voice/incoming", params, "/voice/incoming")
    action = gather_action(body, "/voice/incoming", d.apology)
    params["CallStatus"] = "in-progress"
    for i, key in enumerate(keys):
        body = await send(action, {**params, "Digits": key}, "/voice/gather")
        if i < len(keys) - 1:
            action = gather_action(body, "/voice/gather", d.apology)
        else:
            _ends(body, "/voice/gather", d.apology, "Hangup")
    await send(d.base + "/voice/status", completed(params, 42), "/voice/status")


# --- the scenarios: each returns (scenario, decision) ---------------------------------

async def fresh_caller(d: Driver, key: str | None = None) -> tuple[str, str]:
    """A new number grants (key 1) or declines (2); it joins the returning callers."""
    number = d.numbers.next()
    key = key or d.rng.choice("12")
    await inbound(d, number, [key])
    d.pool.give_back(number, key == "1")
    return "fresh", DECISION[key]


async def returning(d: Driver) -> tuple[str, str]:
    """A number with a stored decision calls again: withdraws, keeps, or decides again."""
    d.returning_seen += 1
    withdraw = d.returning_seen % WITHDRAW_EVERY == 0
    lent = d.pool.lend(d.rng, True if withdraw else None)
    if lent is None:
        lent = d.pool.lend(d.rng, None)
        withdraw = False
    if lent is None:
        d.pool_misses += 1  # every returning caller is on a call: a new caller instead
        return await fresh_caller(d)
    number, grant = lent
    if withdraw:
        scenario, keys, decision = "returning: withdraws", [d.rng.choice("32")], "withdrawn"
    elif grant:
        d.keepers_seen += 1
        if d.keepers_seen % SILENT_EVERY == 0:
            scenario, keys, decision = "returning: keeps (silence)", ["", "", ""], "no_input"
        else:
            scenario, keys, decision = "returning: keeps", ["1"], "granted"
    else:
        key = d.rng.choice("12")
        scenario, keys, decision = "returning: decides again", [key], DECISION[key]
    await inbound(d, number, keys)
    d.pool.give_back(number, standing_after(decision, grant))
    return scenario, decision


async def hangup(d: Driver) -> tuple[str, None]:
    """The caller hangs up during the notice: incoming, then `completed`, no gather."""
    params = call_params(d.numbers.next())
    body = await post(d, d.base + "/voice/incoming", params, "/voice/incoming")
    gather_action(body, "/voice/incoming", d.apology)
    await post(d, d.base + "/voice/status", completed(params, 9), "/voice/status")
    return "hang-up in the notice", None


async def retry(d: Driver) -> tuple[str, str]:
    """A fresh call with one webhook delivered twice (incoming, gather, status in turn)."""
    d.retries_seen += 1
    which = ("/voice/incoming", "/voice/gather", "/voice/status")[d.retries_seen % 3]
    number = d.numbers.next()
    key = d.rng.choice("12")
    await inbound(d, number, [key], retry=which)
    d.pool.give_back(number, key == "1")
    return "Twilio retry", DECISION[key]


async def _live(d: Driver, method: str, sid: str, status: str | None = None) -> dict:
    """Tell "Twilio" a call is live or over, or ask it where it redirected the call."""
    url = f"{d.twilio}/_bench/calls/{sid}"
    try:
        async with d.http.request(method, url, data=status) as r:
            return json.loads(await r.text()) if method == "GET" else {}
    except Exception as e:  # the stand-in is part of the test rig
        raise CallFailed(f"Twilio stand-in {type(e).__name__}") from None


async def transfer(d: Driver) -> tuple[str, str]:
    """An agent moves a live call into the consent flow; "Twilio" redirects and fetches it;
    the caller decides and goes back to the agent's queue; the agent reads the transfer."""
    number = d.numbers.next()
    params = {**call_params(number), "CallStatus": "in-progress"}
    sid = params["CallSid"]
    token = d.agents[d.rng.randrange(len(d.agents))]
    await _live(d, "PUT", sid, "in-progress")
    doc = await _api(d, "POST", "/api/transfers", "POST /api/transfers", 201, token,
                     json={"call_sid": sid, "return_to": {"type": "queue",
                                                          "name": RETURN_QUEUE}},
                     headers={"Idempotency-Key": secrets.token_hex(16)})
    redirect = (await _live(d, "GET", sid)).get("redirect")
    if not redirect or f"transfer={doc.get('id')}" not in redirect:
        raise CallFailed("POST /api/transfers: Twilio saw no redirect of the call")
    body = await post(d, redirect, params, "/voice/transfer")
    action = gather_action(body, "/voice/transfer", d.apology)
    key = d.rng.choice("12")
    body = await post(d, action, {**params, "Digits": key}, "/voice/gather")
    _ends(body, "/voice/gather", d.apology, "Enqueue")
    got = await _api(d, "GET", f"/api/transfers/{doc['id']}", "GET /api/transfers/<id>", 200,
                     token)
    if got.get("status") != "returned" or got.get("decision") != DECISION[key]:
        raise CallFailed(f"GET /api/transfers/<id>: {got.get('status')} "
                         f"{got.get('decision')}, not returned {DECISION[key]}")
    await post(d, d.base + "/voice/status", completed(params, 95), "/voice/status")
    await _live(d, "PUT", sid, "completed")
    d.pool.give_back(number, key == "1")
    return "transfer", DECISION[key]


PLACE = {"returning": returning, "fresh": fresh_caller, "hangup": hangup,
         "transfer": transfer, "retry": retry}


async def mixed_call(d: Driver) -> tuple[str, str | None]:
    """The next call of the mix."""
    return await PLACE[d.mix.next()](d)


async def seed_call(d: Driver) -> tuple[str, str]:
    """A call that stores a decision before the measurement: seven in ten grant."""
    return await fresh_caller(d, "1" if d.rng.random() < 0.7 else "2")


# --- "Twilio" for the agents' transfers ---------------------------------------------------

class LiveTwilio(TwilioStandIn):
    """The project's Twilio stand-in (ivr/adapters/twilio_standin.py), which the load
    generators tell which calls are live, as a real call would be live at Twilio:
    `PUT /_bench/calls/<CallSid>` with the call's status, `GET` for {status, redirect}."""

    CONTROL = re.compile(r"/_bench/calls/(?P<call>CA[0-9a-f]{32})")

    def __init__(self, account_sid: str, auth_token: str):
        super().__init__(account_sid, auth_token)
        self.redirected: dict[str, str] = {}
        live = self

        class Handler(self.server.RequestHandlerClass):
            def do_PUT(self):
                live._control(self)

            def do_GET(self):
                live._control(self)

        self.server.RequestHandlerClass = Handler

    def _answer(self, path: str, headers, form: dict) -> tuple[int, dict]:
        status, doc = super()._answer(path, headers, form)
        if status == 200 and form.get("Url"):
            self.redirected[CALL_PATH.fullmatch(path)["call"]] = form["Url"]
            try:  # the stand-in's own queue is for `simulate`; nobody reads it here
                self.redirects.get_nowait()
            except Empty:
                pass
        return status, doc

    def _control(self, handler) -> None:
        m = self.CONTROL.fullmatch(handler.path)
        if m is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        sid = m["call"]
        if handler.command == "PUT":
            length = int(handler.headers.get("Content-Length") or 0)
            self.calls[sid] = handler.rfile.read(length).decode() or "in-progress"
            body = b"{}"
        else:
            body = json.dumps({"status": self.calls.get(sid),
                               "redirect": self.redirected.get(sid)}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def add_agents(env: dict, n: int) -> list[subprocess.Popen]:
    """Start making N agent accounts as an operator makes them; `tokens()` collects them."""
    return [subprocess.Popen([sys.executable, "-m", "ivr", "users", "add", f"bench-agent-{i}",
                              "--role", "agent"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for i in range(n)]


def tokens(procs: list[subprocess.Popen]) -> list[str]:
    """The agents' bearer tokens: the last line `users add` prints."""
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"python -m ivr users add failed:\n{stdout}{stderr}")
        out.append(stdout.strip().splitlines()[-1])
    return out
