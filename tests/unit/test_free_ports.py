"""Listener ports for the embedded broker, the hub's processes and the tests: below the ephemeral range."""

from __future__ import annotations

import socket

from connectors.embedded import (
    LOOPBACK,
    ephemeral_range,
    free_port,
    free_port_block,
    listen_range,
)


def test_the_kernels_range_is_read_and_a_bad_one_falls_back_to_the_default() -> None:
    assert ephemeral_range("32768\t60999\n") == (32768, 60999)
    assert ephemeral_range("40000 50000") == (40000, 50000)
    assert ephemeral_range("nonsense") == (32768, 60999)
    assert ephemeral_range("60999 32768") == (32768, 60999)


def test_listeners_go_just_below_the_ephemeral_range_when_there_is_room() -> None:
    assert listen_range((32768, 60999)) == (20768, 32767)
    assert listen_range((10000, 60999)) == (1024, 9999)
    assert listen_range((1500, 65535)) is None  # no room above the privileged ports: the kernel chooses


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    low = ephemeral_range()[0]
    for _ in range(20):
        port = free_port()
        if listen_range() is not None:
            assert port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, port))


def test_a_block_is_consecutive_free_ports() -> None:
    base = free_port_block(9)
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(9)]
    try:
        for offset, s in enumerate(sockets):
            s.bind((LOOPBACK, base + offset))
    finally:
        for s in sockets:
            s.close()
    if listen_range() is not None:
        assert base + 8 < ephemeral_range()[0]


def test_a_taken_port_is_not_offered() -> None:
    span = listen_range()
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind((LOOPBACK, free_port()))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        assert all(free_port() != port for _ in range(300 if span else 20))
    finally:
        taken.close()
