"""Member inquiry: what the calling office may know of one of ITS OWN members, from the office book.

    GET  /v1/members/{customer_no}     by the participant's customer number (from the enrollment's 202)
    POST /v1/members/search            body {"nik"} | {"passport_number"} | {"virtual_account_no"}: exactly one.
                                       A body, never a query string: identifiers stay out of access logs.

Another office's member is answered exactly like an unknown one: 404 MEMBER_NOT_FOUND, never 403 (which
would tell the caller the member exists). The NIK is turned into the customer number with the participant
key (services.domain.identity.participant_id); the passport into the keyed lookup hash notify_kbri puts on
member updates (passport_lookup_key): neither identifier is kept or logged here.

The answer is the member view of the office's feed (status, coverage, the open bill with its VA number at
each partner bank, the number of payments credited, the NIK masked to its last 4 digits, the name) plus
`updated_at`, the time of the update it comes from. Nothing else unmasked.

    200  MemberAnswer
    400  INVALID_FIELD (customer_no not 1-20 digits), transport errors of the body (INVALID_JSON, ...)
    401  UNAUTHORIZED
    404  MEMBER_NOT_FOUND
    413 / 415  BODY_TOO_LARGE / UNSUPPORTED_MEDIA_TYPE (search)
    422  SEARCH_KEY (not exactly one identifier), NIK_FORMAT, PASSPORT_FORMAT, VA_FORMAT, INVALID_FIELD
    503  READ_MODEL_NOT_READY + Retry-After: the book is still loading; never a false 404 meanwhile

Order: office key → request shape → readiness → lookup: an unauthenticated caller learns nothing, and a
malformed request is refused the same whether or not the book is loaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from connectors.http_common import (
    INTERNAL_ERROR,
    ErrorBody,
    HttpProblem,
    RequestObservation,
    parse_json_object,
    problem_response,
    read_body,
    require_json_content_type,
    where_failed,
)
from connectors.kbri.context import KbriContext
from connectors.kbri.office_book import HeldMember, OfficeBook, not_ready_problem
from services.domain.errors import Reason, Rejected
from services.domain.identity import participant_id, passport_lookup_key, split_va
from services.domain.office_updates import MemberView
from services.logs import event

log = logging.getLogger(__name__)

API = "kbri"
MEMBER_PATH = "/v1/members/{customer_no}"
SEARCH_PATH = "/v1/members/search"
MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"
SEARCH_KEY = "SEARCH_KEY"
SEARCH_KEYS = ("nik", "passport_number", "virtual_account_no")

_CUSTOMER_NO = re.compile(r"[0-9]{1,20}")
_NIK = re.compile(r"[0-9]{16}")
_PASSPORT = re.compile(r"[A-Z0-9]{6,12}")  # the enrollment rule (services.domain.enrollment), after normalising


class MemberSearchRequest(BaseModel):
    """Body of POST /v1/members/search: exactly one of the three identifiers."""

    nik: str | None = Field(None, description="16-digit NIK", examples=["3602045211870001"])
    passport_number: str | None = Field(None, description="Passport number as enrolled (case and spaces ignored)")
    virtual_account_no: str | None = Field(
        None, description="A SNAP virtualAccountNo of the member's bill (partnerServiceId padded to 8 + customer_no)"
    )


class MemberAnswer(MemberView):
    updated_at: datetime = Field(description="When the update this view comes from happened (UTC)")


REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {(SEARCH_PATH, "post"): MemberSearchRequest}

_COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "UNAUTHORIZED: missing or unknown office key"},
    404: {
        "model": ErrorBody,
        "description": "MEMBER_NOT_FOUND: no such member among the calling office's members (another "
        "office's member is answered the same way)",
    },
    500: {"model": ErrorBody, "description": "INTERNAL_ERROR"},
    503: {"model": ErrorBody, "description": "READ_MODEL_NOT_READY: retry after Retry-After seconds"},
}
GET_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "INVALID_FIELD: customer_no must be 1-20 digits"},
    **_COMMON_ERRORS,
}
SEARCH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Malformed body: INVALID_JSON, INVALID_UTF8, NON_FINITE_NUMBER, DUPLICATE_KEY, "
        "JSON_TOO_DEEP, BODY_NOT_OBJECT",
    },
    413: {"model": ErrorBody, "description": "BODY_TOO_LARGE"},
    415: {"model": ErrorBody, "description": "UNSUPPORTED_MEDIA_TYPE"},
    422: {
        "model": ErrorBody,
        "description": "SEARCH_KEY (not exactly one of nik, passport_number, virtual_account_no), NIK_FORMAT, "
        "PASSPORT_FORMAT, VA_FORMAT, INVALID_FIELD",
    },
    **_COMMON_ERRORS,
}


def not_found() -> HttpProblem:
    return HttpProblem(404, MEMBER_NOT_FOUND, "no such member of this office")


def answer(held: HeldMember) -> MemberAnswer:
    return MemberAnswer(**dict(held.view), updated_at=held.updated_at)


Lookup = Callable[[OfficeBook, str], HeldMember | None]


def search_lookup(body: Mapping[str, Any], secret: bytes, digits: int) -> tuple[str, Lookup]:
    """(which identifier, how to find the member) for a search body; Rejected when the body is not one."""
    given = [key for key in SEARCH_KEYS if body.get(key) is not None]
    if len(given) != 1:
        raise Rejected(SEARCH_KEY, None, "give exactly one of nik, passport_number, virtual_account_no")
    key = given[0]
    value = body[key]
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_FIELD, key, "must be a string")
    if key == "nik":
        nik = value.strip()
        if _NIK.fullmatch(nik) is None:
            raise Rejected(Reason.NIK_FORMAT, "nik", "NIK must be exactly 16 digits")
        customer_no = participant_id(nik, secret, digits)
        return key, lambda book, office: book.member(office, customer_no)
    if key == "passport_number":
        if len(value) > 64:
            raise Rejected(Reason.PASSPORT_FORMAT, key, "must be 6-12 letters or digits")
        normalised = "".join(value.split()).upper()
        if _PASSPORT.fullmatch(normalised) is None:
            raise Rejected(Reason.PASSPORT_FORMAT, key, "must be 6-12 letters or digits")
        lookup_key = passport_lookup_key(normalised, secret)
        return key, lambda book, office: book.member_by_passport_key(office, lookup_key)
    try:
        split_va(value)
    except Rejected:  # named after this body's field, not SNAP's
        raise Rejected(Reason.VA_FORMAT, key, "must be partnerServiceId (8) + customer number (1-20 digits)") from None
    return key, lambda book, office: book.member_by_va(office, value)


def router(ctx: KbriContext) -> APIRouter:
    api = APIRouter()
    secret = ctx.settings.participant_key_secret.get_secret_value().encode("utf-8")
    digits = ctx.settings.customer_no_digits

    async def respond(
        obs: RequestObservation, seen: dict[str, str], run: Callable[[], Awaitable[MemberAnswer]]
    ) -> Response:
        """Run one inquiry; `seen["by"]` names the identifier used (a log field: never its value)."""
        try:
            found = await run()
        except HttpProblem as problem:
            obs.done(problem.status, problem.reason)
            if problem.status < 500:
                event(log, "member inquiry refused", office=obs.partner, by=seen["by"], reason=problem.reason)
            return problem_response(problem)
        except Rejected as rejected:
            obs.done(422, rejected.reason)
            event(log, "member inquiry refused", office=obs.partner, by=seen["by"], reason=rejected.reason)
            return problem_response(HttpProblem(422, rejected.reason, rejected.message, field=rejected.field))
        except Exception as exc:
            log.error("member inquiry failed: %s", where_failed(exc))
            obs.done(500)
            return problem_response(HttpProblem(500, INTERNAL_ERROR, "internal error"))
        obs.done(200)
        event(log, "member inquiry answered", office=obs.partner, by=seen["by"])
        return JSONResponse(found.model_dump(mode="json"), status_code=200)

    def find(office: str, lookup: Lookup) -> MemberAnswer:
        if not ctx.book.ready:
            raise not_ready_problem()
        held = lookup(ctx.book, office)
        if held is None:
            raise not_found()
        return answer(held)

    @api.get(
        MEMBER_PATH,
        response_model=MemberAnswer,
        responses=GET_ERRORS,
        summary="One of the calling office's members, by customer number",
    )
    async def get_member(
        request: Request,
        # Documented, not enforced by FastAPI: a mismatch gets this API's own 400 body.
        customer_no: Annotated[str, Path(description="1-20 digits", json_schema_extra={"pattern": "^[0-9]{1,20}$"})],
        authorization: Annotated[str | None, Header(description="Bearer <office API key>")] = None,
    ) -> Response:
        obs = RequestObservation(API, "member_inquiry")

        async def run() -> MemberAnswer:
            office = ctx.auth.office(request, obs)
            if _CUSTOMER_NO.fullmatch(customer_no) is None:
                raise HttpProblem(400, Reason.INVALID_FIELD.value, "must be 1-20 digits", field="customer_no")
            return find(office, lambda book, o: book.member(o, customer_no))

        return await respond(obs, {"by": "customer_no"}, run)

    @api.post(
        SEARCH_PATH,
        response_model=MemberAnswer,
        responses=SEARCH_ERRORS,
        summary="One of the calling office's members, by NIK, passport number or VA number (in the body)",
    )
    async def search_member(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer <office API key>")] = None,
    ) -> Response:
        obs = RequestObservation(API, "member_search")
        seen = {"by": "search"}

        async def run() -> MemberAnswer:
            office = ctx.auth.office(request, obs)
            require_json_content_type(request)
            body = parse_json_object(await read_body(request, ctx.settings.max_body_bytes))
            seen["by"], lookup = search_lookup(body, secret, digits)
            return find(office, lookup)

        return await respond(obs, seen, run)

    return api
