"""A PostgreSQL for tests: the server ``.ci/run`` started, one private schema per test.

``STREAMBOT_TEST_DATABASE_URL`` names the server (``.ci/run`` always sets it). Without it the tests
that need PostgreSQL skip, saying so. Each test gets its own schema through ``search_path`` in the
URL (asyncpg passes unknown URL parameters to the server as settings), so tests never see each
other's rows and nothing has to be cleaned between them but one ``DROP SCHEMA``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

ENV = "STREAMBOT_TEST_DATABASE_URL"
SKIP_REASON = f"needs PostgreSQL: set {ENV} (.ci/run starts a throwaway server and sets it)"


def server_url() -> str:
    url = os.environ.get(ENV, "")
    if not url:
        pytest.skip(SKIP_REASON)
    return url


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A DSN whose connections see only a fresh, empty schema (dropped afterwards)."""
    async with fresh_schema() as url:
        yield url


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A DSN on a new private schema, dropped on exit; skips the test without a server."""
    base = server_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield with_schema(base, schema)
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()
