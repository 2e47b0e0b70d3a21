"""The UDP receive loop: one thread, plain blocking ``recv`` (not asyncio, which caps near
20-25k datagrams/s here), decode, aggregate, hand over to the writer twice a second.

The loop does as little as it can per datagram: ``recv``, decode (line caches make repeats
cheap), one Counter increment keyed by ``(bucket, report)``. Identical reports in one interval
become one entry with a count. Every ``handoff_interval`` seconds (and when idle) the batch goes
to the :class:`~popcon.server.store.Writer`; if its queue is full the batch's datagrams are
counted as ``overload`` instead of growing memory. The socket has a kernel receive timeout
(``SO_RCVTIMEO``) so an idle loop still hands over and notices ``stop()`` without a ``poll``
before every ``recv``.

Public API (stable): :class:`Receiver` (``start()``, ``address``, ``stop()``, ``results``),
:class:`Collector` (a writer and a receiver started and stopped together),
:func:`parse_address`.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections import Counter
from typing import Callable, Union

from popcon.server.decode import MAX_DATAGRAM, Decoder, InventoryPart, make_decoder
from popcon.server.store import Batch, StoreSettings, Writer

log = logging.getLogger("popcon.server.receiver")

#: Inventory parts kept per batch; more in one interval are counted as ``overload``.
MAX_INVENTORY_PARTS_PER_BATCH = 10_000
#: Asked of the kernel; Linux caps it at ``net.core.rmem_max`` (4 MiB here).
RECEIVE_BUFFER = 8 << 20
_IDLE_TIMEOUT = 0.2


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
    """Receives on ``address`` and feeds ``writer``; ``results`` counts datagrams since start
    (by the decoder's verdict; the writer's cap reasons are only in the database)."""

    def __init__(
        self,
        writer: Writer,
        address: tuple[str, int] = ("127.0.0.1", 8137),
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
        self.results: Counter = Counter()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), e.g. the real port after binding port 0."""
        if self._sock is None:
            raise RuntimeError("the receiver is not started")
        name = self._sock.getsockname()
        return name[0], name[1]

    def start(self) -> None:
        """Bind (raises ``OSError`` when the address is taken or invalid) and start."""
        self._sock = _bind(self.requested_address, self.receive_buffer)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="popcon-receiver", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving and hand the last batch to the writer."""
        if self._thread is None:
            return
        self._stopping = True
        self._thread.join(timeout)
        self._thread = None
        if self._sock is not None:
            self._sock.close()

    def _handoff(self, batch: Batch) -> None:
        if not batch:
            return
        self.results.update(batch.results)
        if not self.writer.submit(batch):
            dropped = batch.results.get("ok", 0)
            self.results["ok"] -= dropped
            self.results["overload"] += dropped
            overload = Batch(results=Counter({"overload": dropped}))
            for reason, count in batch.results.items():
                if reason != "ok":
                    overload.results[reason] += count
            if not self.writer.submit(overload):
                log.warning(
                    "writer queue full: %d datagrams not counted", sum(batch.results.values())
                )

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._receive()
            except Exception:  # a bug must not end receiving; the batch in hand is lost
                log.exception("receive loop failed; restarting it")
                time.sleep(0.1)

    def _receive(self) -> None:
        sock = self._sock
        assert sock is not None
        recv = sock.recv
        decode = self.decode
        clock = self.clock
        width = self.writer.bucket_width
        interval = self.handoff_interval
        size = MAX_DATAGRAM + 1
        str_class = str
        inventory_class = InventoryPart
        while True:
            # One interval, within one bucket: identical datagrams are counted by their bytes
            # and decoded once (bytes cache their hash, so a repeat costs one dict lookup).
            seen: dict[bytes, list] = {}
            seen_get = seen.get
            results: Counter = Counter()
            inventories: list[InventoryPart] = []
            now = clock()
            bucket = int(now) - int(now) % width
            deadline = min(now + interval, bucket + width)
            while True:
                try:
                    data = recv(size)
                except (BlockingIOError, socket.timeout):
                    if self._stopping or clock() >= deadline:
                        break
                    continue
                except OSError as error:  # never fatal
                    if self._stopping:
                        break
                    log.debug("recv failed: %s", error)
                    continue
                entry = seen_get(data)
                if entry is not None:
                    entry[1] += 1
                else:
                    decoded = decode(data)
                    cls = decoded.__class__
                    if cls is str_class:
                        results[decoded] += 1
                    elif cls is inventory_class:
                        if len(inventories) < MAX_INVENTORY_PARTS_PER_BATCH:
                            inventories.append(decoded)  # type: ignore[arg-type]
                            results["ok"] += 1
                        else:
                            results["overload"] += 1
                    else:
                        seen[data] = [decoded, 1]
                if clock() >= deadline:
                    break
            batch = Batch(inventories=inventories, results=results)
            uses = batch.uses
            ok = 0
            for report, count in seen.values():
                key = (bucket, report)
                uses[key] += count
                ok += count
            if ok:
                results["ok"] += ok
            self._handoff(batch)
            if self._stopping:
                break


class Collector:
    """A :class:`Writer` and a :class:`Receiver` on one database, started and stopped together.

    ``Collector(db_path, ("127.0.0.1", 8137), settings, key=b"...")``; ``start()`` raises if
    the database or the address cannot be used; ``stop()`` receives no more, writes what is
    pending, closes.
    """

    def __init__(
        self,
        db_path: Union[str, os.PathLike[str]],
        address: tuple[str, int] = ("127.0.0.1", 8137),
        settings: StoreSettings | None = None,
        *,
        key: bytes | None = None,
        statsd_prefix: str = "python_popcon",
        statsd_env: str = "statsd",
        clock: Callable[[], float] = time.time,
        handoff_interval: float = 0.5,
    ) -> None:
        self.writer = Writer(db_path, settings, clock=clock)
        self.receiver = Receiver(
            self.writer,
            address,
            decoder=make_decoder(key, statsd_prefix, statsd_env),
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
        """Wait until what was received so far is committed (the receiver hands over within
        ``handoff_interval``)."""
        time.sleep(self.receiver.handoff_interval + _IDLE_TIMEOUT + 0.05)
        return self.writer.flush(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.receiver.stop()
        self.writer.stop(timeout)
