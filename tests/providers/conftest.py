from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.providers.stub import GeminiStub


@pytest.fixture
async def stub() -> AsyncIterator[GeminiStub]:
    server = GeminiStub()
    await server.start()
    yield server
    await server.stop()
