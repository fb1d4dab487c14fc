"""Declaring the topology against a broker that does not answer."""

import asyncio

import pytest

from shared.topology import ServiceQueue, declare_all


async def test_declaring_against_a_broker_that_never_answers_fails_instead_of_hanging():
    """Seen while another run on the machine stopped the shared broker's application: the
    TCP connection was accepted, the AMQP handshake never answered, and a restarting
    service waited in its start-up for good."""
    async def silent(reader, writer):
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(10):
            with pytest.raises((TimeoutError, ConnectionError)):
                await declare_all(f"amqp://guest:guest@127.0.0.1:{port}/", [ServiceQueue("x", ())], connect_timeout=1.0)
    finally:
        server.close()
