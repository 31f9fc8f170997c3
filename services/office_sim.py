"""`sinergi office-sim`: the demo's embassy systems, two offices receiving what the hub tells them.

For each of two offices (KBRI_KUALA_LUMPUR and KJRI_JOHOR_BAHRU, else the first two of
SINERGI_OFFICE_TOKENS):
- a webhook receiver (one uvicorn server on 127.0.0.1, path /hooks/<office>) that verifies every delivery with
  the reference verifier, standardwebhooks.Webhook(secret).verify, with the office's own secrets. A bad
  signature, an update of another office, or a webhook-id that is not the update's id counts as an error and
  is refused;
- a pull-feed reader polling GET /v1/updates?after=<cursor> with the office's token. A 404 without a reason
  code is the route not being there yet (the feed is built separately): tried again later.

Every ten seconds it prints one line: per office, webhooks verified, feed items read and how many subjects
are in which latest status. Counts and status codes only, never a person.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import uvicorn
from pydantic import ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.config import Settings
from services.domain.office_updates import OfficeUpdate, UpdateType

log = logging.getLogger(__name__)

PREFERRED_OFFICES = ("KBRI_KUALA_LUMPUR", "KJRI_JOHOR_BAHRU")
DEFAULT_PORT = 8084
RECEIVER_HOST = "127.0.0.1"
FEED_LIMIT = 100


def sim_offices(settings: Settings) -> list[str]:
    preferred = [code for code in PREFERRED_OFFICES if code in settings.office_tokens]
    return preferred if len(preferred) == len(PREFERRED_OFFICES) else list(settings.office_tokens)[:2]


def receiver_url(office: str, port: int) -> str:
    return f"http://{RECEIVER_HOST}:{port}/hooks/{office}"


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def demo_subscriptions(settings: Settings, port: int) -> str:
    """SINERGI_OFFICE_WEBHOOKS for the demo: the configured subscriptions, with the simulated offices pointed
    at this receiver under fresh secrets (they live only in the environment of two child processes)."""
    subscriptions = {
        office: {"url": sub.url, "secrets": [s.get_secret_value() for s in sub.secrets]}
        for office, sub in settings.office_webhooks.items()
    }
    for office in sim_offices(settings):
        subscriptions[office] = {"url": receiver_url(office, port), "secrets": [new_webhook_secret()]}
    return json.dumps(subscriptions)


def _status_of(update: OfficeUpdate) -> str:
    if update.member is not None:
        return update.member.status
    if update.case is not None:
        return f"CASE_{update.case.status}"
    return "REJECTED" if update.type is UpdateType.ENROLLMENT_REJECTED else update.type.value


@dataclass
class OfficeTally:
    verified: int = 0  # distinct webhook-ids verified
    deliveries: int = 0  # verified requests, redeliveries included
    errors: int = 0
    feed_items: int = 0  # distinct updates read from the feed
    feed_state: str = "starting"
    cursor: str | None = field(default=None, repr=False)
    _webhook_ids: set[str] = field(default_factory=set, repr=False)
    _feed_ids: set[str] = field(default_factory=set, repr=False)
    _latest: dict[str, tuple[int, str]] = field(default_factory=dict, repr=False)  # subject -> (sequence, status)

    def observe(self, update: OfficeUpdate) -> None:
        """Keep the highest sequence per subject, as the integration guide tells offices to."""
        subject = f"{update.type.value}:{update.subject}"
        held = self._latest.get(subject)
        if held is None or update.sequence > held[0]:
            self._latest[subject] = (update.sequence, _status_of(update))

    def webhook(self, update: OfficeUpdate) -> None:
        self.deliveries += 1
        if update.update_id not in self._webhook_ids:
            self._webhook_ids.add(update.update_id)
            self.verified += 1
        self.observe(update)

    def feed(self, update: OfficeUpdate) -> None:
        if update.update_id not in self._feed_ids:
            self._feed_ids.add(update.update_id)
            self.feed_items += 1
        self.observe(update)

    def statuses(self) -> Counter[str]:
        return Counter(status for _, status in self._latest.values())

    def part(self, office: str) -> str:
        latest = ", ".join(f"{s} {n}" for s, n in sorted(self.statuses().items())) or "-"
        feed = f"feed {self.feed_items} items" + ("" if self.feed_state == "reading" else f" ({self.feed_state})")
        return (
            f"{office}: webhooks {self.verified} verified ({self.deliveries} deliveries, {self.errors} errors), "
            f"{feed}; latest {latest}"
        )


class OfficeSim:
    def __init__(
        self,
        settings: Settings,
        *,
        port: int | None = None,
        kbri_transport: httpx.AsyncBaseTransport | None = None,
        emit: Callable[[str], None] = lambda line: print(line, flush=True),
        interval_s: float = 10.0,
        feed_poll_s: float = 2.0,
        feed_unavailable_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.offices = sim_offices(settings)
        self.port = port or settings.office_sim_port or DEFAULT_PORT
        self.tallies = {office: OfficeTally() for office in self.offices}
        self.stray = 0  # deliveries to a path that is no simulated office
        self._secrets = {
            office: [s.get_secret_value() for s in settings.office_webhooks[office].secrets]
            for office in self.offices
            if office in settings.office_webhooks
        }
        self._kbri_transport = kbri_transport
        self._emit = emit
        self._interval_s = interval_s
        self._feed_poll_s = feed_poll_s
        self._feed_unavailable_s = feed_unavailable_s
        self._stopping = asyncio.Event()
        self.app = Starlette(routes=[Route("/hooks/{office}", self._hook, methods=["POST"])])

    def line(self) -> str:
        return "[office-sim] " + " | ".join(self.tallies[o].part(o) for o in self.offices)

    def stop(self) -> None:
        self._stopping.set()

    # --- webhooks ----------------------------------------------------------------------------------------
    def _verified(self, office: str, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self._secrets.get(office, []):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            return True
        return False

    async def _hook(self, request: Request) -> Response:
        office = request.path_params["office"]
        tally = self.tallies.get(office)
        if tally is None:
            self.stray += 1
            return Response(status_code=404)
        body = await request.body()
        headers = dict(request.headers)
        if not self._verified(office, body, headers):
            tally.errors += 1
            return Response(status_code=401)
        try:
            update = OfficeUpdate.model_validate_json(body)
        except ValidationError:
            tally.errors += 1
            return Response(status_code=400)
        if update.office != office or headers.get("webhook-id") != update.update_id:
            tally.errors += 1  # another office's update, or an id that would defeat deduplication
            return Response(status_code=400)
        tally.webhook(update)
        return Response(status_code=204)

    # --- pull feed ------------------------------------------------------------------------------------------
    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def read_feed(self, client: httpx.AsyncClient, office: str) -> None:
        token = self.settings.office_tokens[office].get_secret_value()
        tally = self.tallies[office]
        while not self._stopping.is_set():
            params = {"limit": str(FEED_LIMIT)}
            if tally.cursor is not None:
                params["after"] = tally.cursor
            try:
                response = await client.get("/v1/updates", params=params, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError:
                tally.feed_state = "API unreachable"
                await self._wait(self._feed_poll_s)
                continue
            delay = self._feed(office, tally, response)
            if delay > 0:
                await self._wait(delay)

    def _feed(self, office: str, tally: OfficeTally, response: httpx.Response) -> float:
        """Apply one feed answer; seconds to wait before the next request."""
        status = response.status_code
        if status == 200:
            try:
                doc = response.json()
                updates = [OfficeUpdate.model_validate(item) for item in doc["updates"]]
            except (ValueError, KeyError, TypeError, ValidationError):
                tally.feed_state = "unreadable answer"
                tally.errors += 1
                return self._feed_poll_s
            for update in updates:
                if update.office != office:
                    tally.errors += 1
                    continue
                tally.feed(update)
            tally.cursor = doc.get("next") or tally.cursor
            tally.feed_state = "reading"
            return 0.0 if doc.get("has_more") else self._feed_poll_s
        reason = _reason(response)
        if status == 404 and reason is None:
            tally.feed_state = "not available yet"
            return self._feed_unavailable_s
        if status == 410:  # CURSOR_EXPIRED: start over; updates already seen are recognised by their id
            tally.cursor = None
            tally.feed_state = "resync"
            return 0.0
        tally.feed_state = f"HTTP {status}" + (f" {reason}" if reason else "")
        if status == 503:
            return _retry_after(response, self._feed_poll_s)
        tally.errors += 1
        return self._feed_unavailable_s

    # --- process -------------------------------------------------------------------------------------------
    async def _report(self) -> None:
        while not self._stopping.is_set():
            await self._wait(self._interval_s)
            if not self._stopping.is_set():
                self._emit(self.line())

    async def run(self) -> None:
        base = f"http://{self.settings.http_host}:{self.settings.kbri_api_port}"
        config = uvicorn.Config(
            self.app, host=RECEIVER_HOST, port=self.port, log_level="warning", access_log=False, lifespan="off"
        )
        server = uvicorn.Server(config)
        async with httpx.AsyncClient(
            base_url=base, transport=self._kbri_transport, timeout=10.0, trust_env=False
        ) as client:
            tasks = [asyncio.create_task(self.read_feed(client, office)) for office in self.offices]
            tasks.append(asyncio.create_task(self._report()))
            self._emit(
                f"[office-sim] offices {', '.join(self.offices)}; webhook receiver http://{RECEIVER_HOST}:{self.port}"
                f"/hooks/<office> ({len(self._secrets)} subscribed); feed {base}/v1/updates"
            )
            try:
                await server.serve()
            finally:
                self.stop()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


def _reason(response: httpx.Response) -> str | None:
    try:
        doc = response.json()
    except ValueError:
        return None
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return reason if isinstance(reason, str) else None


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else default


def run_office_sim(settings: Settings) -> int:
    asyncio.run(OfficeSim(settings).run())
    return 0
