"""The floor bench's pure parts: its arithmetic, the HTTP floor endpoint and the request it is sent."""

from __future__ import annotations

import re

import orjson
from fastapi.testclient import TestClient

from services.bench_floor import (
    ACCEPTED,
    CORES,
    FAUST_INPUTS_PER_RECORD,
    PAYMENT_PATH,
    FaustFloor,
    HttpFloor,
    budget_lines,
    http_app,
    payment_wire,
)


def _floor(us_per_event: float, events: int = 10_000) -> FaustFloor:
    return FaustFloor(events=events, seconds=2.0, cpu_s=us_per_event * events / 1e6)


def _http(us_per_request: float) -> HttpFloor:
    return HttpFloor("answered after Kafka's ack", 10_000, 0, 3.0, us_per_request * 10_000 / 1e6, 5.0, 9.0)


def test_target1_budget_is_the_cores_over_an_eighth_of_the_raw_rate() -> None:
    lines = budget_lines(24_000.0, _floor(250), _floor(270), None)
    budget = CORES * 1e6 / (0.125 * 24_000)
    assert f"= {budget:,.0f} µs of CPU per record" in lines[0]
    stage = next(line for line in lines if "the stage floor" in line)
    floor_us = FAUST_INPUTS_PER_RECORD * 250
    assert f"= {floor_us:,.0f} µs" in stage
    left = budget - floor_us
    expected = f"leaving {left:,.0f} µs" if left > 0 else f"{-left:,.0f} µs more than the whole budget"
    assert expected in stage


def test_a_cheap_floor_leaves_room_and_an_expensive_one_does_not() -> None:
    cheap = budget_lines(24_000.0, _floor(10), None, None)
    dear = budget_lines(24_000.0, _floor(10_000), None, None)
    assert "leaving" in cheap[-1] and "more than the whole budget" not in cheap[-1]
    assert "more than the whole budget" in dear[-1]


def test_target3_budget() -> None:
    lines = budget_lines(0.0, None, None, _http(300))
    assert "= 333 µs each" in lines[0] and "takes 300 µs" in lines[0]
    assert "leaving 33 µs" in lines[1]
    assert "more than the whole budget" in budget_lines(0.0, None, None, _http(400))[1]


def test_no_figures_no_lines() -> None:
    assert budget_lines(0.0, _floor(250), None, None) == []
    assert budget_lines(24_000.0, FaustFloor(0, 0.0, 0.0), None, HttpFloor("x", 0, 5, 1.0, 1.0, 0, 0)) == []


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.sent.append((topic, key, value))


def test_http_floor_answers_after_the_send() -> None:
    producer = _Recorder()
    client = TestClient(http_app(producer, "t"))
    answer = client.post(PAYMENT_PATH, content=b'{"paidAmount": {"value": "1.00"}}')
    assert answer.status_code == 200 and answer.content == ACCEPTED
    assert [(t, orjson.loads(v)) for t, _, v in producer.sent] == [("t", {"paidAmount": {"value": "1.00"}})]


def test_http_floor_without_kafka() -> None:
    answer = TestClient(http_app(None, "")).post(PAYMENT_PATH, content=b"{}")
    assert answer.status_code == 200 and answer.content == ACCEPTED


def test_payment_wire_is_one_http_request_of_the_body() -> None:
    body = b'{"customerNo": "1"}'
    wire = payment_wire("127.0.0.1", body)
    head, _, rest = wire.partition(b"\r\n\r\n")
    assert rest == body
    assert head.startswith(f"POST {PAYMENT_PATH} HTTP/1.1".encode())
    length = re.search(rb"Content-Length: (\d+)", head)
    assert length is not None and int(length.group(1)) == len(body)
