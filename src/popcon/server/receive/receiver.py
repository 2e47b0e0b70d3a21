"""The UDP receive loop: one thread, plain blocking ``recv`` (not asyncio, which caps near
20-25k datagrams/s here), hand-overs to the receiving side's counting, jobs to the writer.

Per datagram the loop only receives and keeps the datagram. Every ``handoff_interval``
seconds or :data:`MAX_INTERVAL_DATAGRAMS` datagrams (and at each bucket edge) it hands the
interval's datagrams to the :class:`~popcon.server.receive.ingest.Ingestor`, which counts
those of known lines by their lines and decodes and aggregates the others (identical ones
once, signed ones each time, so the decoder drops every replay) into the pending rows (ids,
caps): a short pause each, which the socket's buffer absorbs. At most every
``commit_interval`` the pending rows go to the :class:`~popcon.server.storage.writer.Writer`
as one job, and a job the writer gave back is merged into the next one. Calls go one way:
the receiver calls the writer, never the reverse. All this Python work stays on this thread;
the writer thread runs SQL, which releases the GIL, and merges the people's sketches (see the
Writer), so the two rarely convoy on it. The socket has a kernel receive timeout
(``SO_RCVTIMEO``) so an idle loop still hands over and notices ``stop()`` without a ``poll``
before every ``recv``.

The collector's process runs Python's cyclic garbage collector rarely
(:func:`collect_garbage_rarely`): the records the line caches and pending rows hold are many
small objects that live long, and each full collection walks all of them.

Public API (stable): :class:`Receiver` (``start()``, ``address``, ``stop()``, ``results``),
:class:`Collector` (a writer and a receiver started and stopped together),
:func:`parse_address`, :func:`collect_garbage_rarely`.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import struct
import threading
import time
from collections import Counter
from typing import Callable, Union

from popcon.protocol import DEFAULT_COLLECTOR_PORT, MAX_DATAGRAM
from popcon.protocol.decode import Decoder, make_decoder
from popcon.server.receive.ingest import Ingestor
from popcon.server.storage.schema import StoreSettings
from popcon.server.storage.writer import Writer, job_rows

log = logging.getLogger("popcon.server.receive.receiver")

#: Datagrams one interval takes at most before it is handed over, whatever the rate: what
#: the loop holds between hand-overs stays the same as the rate grows.
MAX_INTERVAL_DATAGRAMS = 4096
#: Asked of the kernel; Linux caps it at ``net.core.rmem_max`` (4 MiB here).
RECEIVE_BUFFER = 8 << 20
_IDLE_TIMEOUT = 0.2


#: The cyclic garbage collector's thresholds in a collector's process (Python's are 700, 10,
#: 10): a young collection every 100,000 allocations, an older one every 50 of those, a full
#: one every 20 of those at most. What the collector drops is freed by reference counting
#: as before; only cycles wait longer.
GC_THRESHOLDS = (100_000, 50, 20)


def collect_garbage_rarely() -> None:
    """Set :data:`GC_THRESHOLDS` for this process (``popcon serve`` does at its start): at
    20,000 datagrams/s with people, the receiving and writing threads use about 15 % less CPU
    (0.84-0.85x in ``benchmarks/ingest.py``, which measures both)."""
    gc.set_threshold(*GC_THRESHOLDS)


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """``"127.0.0.1:8137"``, ``"[::1]:8137"``, ``"0.0.0.0"`` → (host, port); ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected a port 0-65535, got {port_text!r}")
    return host, int(port_text)


def _bind(address: tuple[str, int], receive_buffer: int) -> socket.socket:
    host, port = address
    family, kind, proto, _name, sockaddr = socket.getaddrinfo(
        host, port, 0, socket.SOCK_DGRAM, 0, socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        except OSError:  # pragma: no cover - some systems refuse large buffers
            pass
        sock.bind(sockaddr)
        try:
            seconds = int(_IDLE_TIMEOUT)
            micros = int((_IDLE_TIMEOUT - seconds) * 1e6)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micros)
            )
        except (OSError, AttributeError, struct.error):  # pragma: no cover - not Linux/macOS
            sock.settimeout(_IDLE_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


class Receiver:
    """Receives on ``address`` and feeds ``writer`` (started first: its catalog and settings
    make the receiver's :class:`~popcon.server.receive.ingest.Ingestor`); ``results`` counts
    datagrams since start as the decoder judged them (the caps' reasons are in the database)."""

    def __init__(
        self,
        writer: Writer,
        address: tuple[str, int] = ("127.0.0.1", DEFAULT_COLLECTOR_PORT),
        *,
        decoder: Decoder | None = None,
        handoff_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        receive_buffer: int = RECEIVE_BUFFER,
    ) -> None:
        self.writer = writer
        self.requested_address = address
        self.decode = decoder or make_decoder()
        self.handoff_interval = handoff_interval
        self.clock = clock
        self.receive_buffer = receive_buffer
        self.results: Counter[str] = Counter()
        self._ingestor: Ingestor | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._hurry = threading.Event()
        self._handed = threading.Event()
        self._last_submit = 0.0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), e.g. the real port after binding port 0."""
        if self._sock is None:
            raise RuntimeError("the receiver is not started")
        name = self._sock.getsockname()
        return name[0], name[1]

    def start(self) -> None:
        """Bind (raises ``OSError`` when the address is taken or invalid) and start."""
        self._ingestor = Ingestor(self.writer.catalog, self.writer.settings)
        self._sock = _bind(self.requested_address, self.receive_buffer)
        self._stopping = False
        self._last_submit = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="popcon-receiver", daemon=True)
        self._thread.start()

    def hand_over(self, timeout: float = 5.0) -> bool:
        """Ask the loop to hand everything received so far to the writer now; wait for it."""
        self._handed.clear()
        self._hurry.set()
        return self._handed.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int:
        """Stop receiving and hand the last job to the writer; returns the rows it could not
        hand over (0 when the writer took everything)."""
        if self._thread is None:
            return 0
        self._stopping = True
        self._thread.join(timeout)
        self._thread = None
        if self._sock is not None:
            self._sock.close()
        assert self._ingestor is not None
        returned = self.writer.take_returned()
        if returned is not None:
            self._ingestor.give_back(returned)
        job = self._ingestor.take_job()
        if job is not None and not self.writer.submit(job, timeout=timeout):
            log.error("writer queue full at stop: %d rows not written", job_rows(job))
            return job_rows(job)
        return 0

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._receive()
            except Exception:  # a bug must not end receiving; the interval in hand is lost
                log.exception("receive loop failed; restarting it")
                time.sleep(0.1)

    def _handoff(self, datagrams: list[bytes], bucket: int, drained: bool) -> None:
        """Count an interval's datagrams (all of ``bucket``); submit a job when due.
        ``drained``: the socket was found empty, so a requested hand-over (:meth:`hand_over`)
        is complete."""
        ingestor = self._ingestor
        assert ingestor is not None
        writer = self.writer
        returned = writer.take_returned()
        if returned is not None:
            ingestor.give_back(returned)
        if datagrams:
            self.results.update(ingestor.receive(datagrams, self.decode, bucket, self.clock()))
        tick = time.monotonic()
        hurry = drained and self._hurry.is_set()
        if (hurry or tick - self._last_submit >= writer.settings.commit_interval) and (
            writer.can_submit()
        ):
            job = ingestor.take_job()
            if job is not None:
                writer.submit(job)
            self._last_submit = tick
            if hurry:
                self._hurry.clear()
                self._handed.set()

    def _receive(self) -> None:
        sock = self._sock
        assert sock is not None
        recv = sock.recv
        clock = self.clock
        width = self.writer.bucket_width
        interval = self.handoff_interval
        size = MAX_DATAGRAM + 1
        hurry = self._hurry
        carry: bytes | None = None  # received after an interval's end: the next one's
        while True:
            # One interval, within one bucket: its datagrams, counted together at its end.
            datagrams: list[bytes] = []
            keep = datagrams.append
            now = clock()
            bucket = int(now) - int(now) % width
            deadline = min(now + interval, bucket + width)
            drained = False
            room = MAX_INTERVAL_DATAGRAMS
            while room:
                room -= 1
                if carry is not None:
                    data, carry = carry, None
                else:
                    try:
                        data = recv(size)
                    except (BlockingIOError, socket.timeout):
                        if self._stopping or hurry.is_set() or clock() >= deadline:
                            drained = True
                            break
                        continue
                    except OSError as error:  # never fatal
                        if self._stopping:
                            break
                        log.debug("recv failed: %s", error)
                        continue
                    if clock() >= deadline:
                        carry = data
                        break
                keep(data)
            self._handoff(datagrams, bucket, drained)
            if self._stopping:
                if carry is not None:
                    now = clock()
                    self._handoff([carry], int(now) - int(now) % width, True)
                return


class Collector:
    """A :class:`Writer` and a :class:`Receiver` on one database, started and stopped together.

    ``Collector(db_path, ("127.0.0.1", 8137), settings, key=b"...")``; ``start()`` raises if
    the database or the address cannot be used
    (:class:`~popcon.server.storage.lock.DatabaseInUse` when another collector writes to
    that database); ``stop()`` receives no more, writes what is pending, closes, and
    returns the rows it could not write (0 when everything received is in the database).
    """

    def __init__(
        self,
        db_path: Union[str, os.PathLike[str]],
        address: tuple[str, int] = ("127.0.0.1", DEFAULT_COLLECTOR_PORT),
        settings: StoreSettings | None = None,
        *,
        key: bytes | str | None = None,
        statsd_prefix: str = "python_popcon",
        statsd_env: str = "statsd",
        clock: Callable[[], float] = time.time,
        handoff_interval: float = 0.5,
    ) -> None:
        self.writer = Writer(db_path, settings, clock=clock)
        self.receiver = Receiver(
            self.writer,
            address,
            decoder=make_decoder(key or None, statsd_prefix, statsd_env, clock=clock),
            clock=clock,
            handoff_interval=handoff_interval,
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.receiver.address

    def start(self) -> None:
        self.writer.start()
        try:
            self.receiver.start()
        except BaseException:
            self.writer.stop()
            raise

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until what was received so far is committed; False on timeout (e.g. while the
        database is locked)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            if self.receiver.hand_over(remaining) and self.writer.flush(
                max(0.0, deadline - time.monotonic())
            ):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 10.0) -> int:
        unwritten = self.receiver.stop()
        return unwritten + self.writer.stop(timeout)
