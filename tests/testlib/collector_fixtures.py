"""Fixtures of the collector's and the faces' tests (tests/collector/, tests/faces/): writers
and collectors on temporary databases, the sample database and the API serving it in-process.
The helpers they use live in ``collectors``, ``datagrams`` and ``timing``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from timing import NOW, FakeClock

# -- storage and receiving ---------------------------------------------------------------------


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock tests move by hand: ``fake_clock()`` is the time, ``fake_clock.advance(s)``
    moves it (starts at ``timing.T0``, a Monday 00:00 UTC)."""
    return FakeClock()


@pytest.fixture
def store_writer(tmp_path: Path, fake_clock: FakeClock) -> Iterator[Callable[..., Any]]:
    """``store_writer(settings=None, path=None)`` → a started ``Writer`` on a temporary
    database, on ``fake_clock``; stopped after the test."""
    from popcon.server.storage.writer import Writer

    writers = []

    def make(settings: Any = None, path: Path | None = None) -> Writer:
        writer = Writer(path or tmp_path / "popcon.sqlite", settings, clock=fake_clock)
        writer.start()
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        writer.stop()


@pytest.fixture
def live_collector(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``live_collector(settings=None, path=None, **kwargs)`` → a started ``Collector``
    receiving on 127.0.0.1 (a free port) into a temporary database; stopped after the test."""
    from popcon.server.receive.receiver import Collector

    collectors = []

    def make(settings: Any = None, path: Path | None = None, **kwargs: Any) -> Collector:
        collector = Collector(
            path or tmp_path / "popcon.sqlite", ("127.0.0.1", 0), settings, **kwargs
        )
        collector.start()
        collectors.append(collector)
        return collector

    yield make
    for collector in collectors:
        collector.stop()


# -- the faces: HTTP API, CLI, metrics ---------------------------------------------------------


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding ``datagrams.sample_datagrams()``, stored at ``timing.NOW``."""
    from collectors import store_datagrams
    from datagrams import sample_datagrams

    path = tmp_path_factory.mktemp("sample") / "popcon.sqlite"
    store_datagrams(path, sample_datagrams())
    return path


@pytest.fixture
def make_ctx() -> Iterator[Callable[..., Any]]:
    """``make_ctx(db, min_count=3, api_auth=None, metrics_auth=None, min_users=3)`` → a
    ServerContext whose clock stands at ``timing.NOW``; readers are closed after the test."""
    from popcon.server.web.auth import OpenAuth
    from popcon.server.web.base import Reader, ServerContext
    from popcon.server.web.metrics import make_registry

    readers = []

    def make(
        db: Path,
        min_count: int = 3,
        api_auth: Any = None,
        metrics_auth: Any = None,
        min_users: int = 3,
    ) -> ServerContext:
        reader = Reader(str(db))
        readers.append(reader)
        return ServerContext(
            reader=reader,
            min_count=min_count,
            min_users=min_users,
            api_auth=api_auth or OpenAuth(),
            metrics_auth=metrics_auth or OpenAuth(),
            now=FakeClock(NOW),
            registry=make_registry(reader.connection, min_count, min_users, FakeClock(NOW)),
        )

    yield make
    for reader in readers:
        reader.close()


@pytest.fixture
def api(sample_db: Path, make_ctx: Callable[..., Any]) -> Iterator[Any]:
    """The open API over the sample database, served in-process on 127.0.0.1."""
    from collectors import ApiServer

    with ApiServer(make_ctx(sample_db)) as server:
        yield server
