"""What a decoder with a key remembers to drop replayed signed datagrams, in bounded memory.

A signed datagram carries a ``t`` line: the minute it was sent and its process's nonce
(docs/protocol.md). :class:`Replays` takes a datagram's signature once: it answers ``stale``
when the minute is more than :data:`~popcon.protocol.TIME_WINDOW` minutes from its clock,
``replay`` when it took that signature before. It keeps the signatures it took by their minute
and forgets a minute as soon as datagrams of that minute are stale anyway, so a signature is
remembered for as long as a copy of it could be taken, about six minutes. It remembers at most
``limit`` signatures: when that many are remembered, new signed datagrams are dropped as
``replay_cap`` until minutes are forgotten (a replay is never taken, and memory stays bounded).
"""

from __future__ import annotations

from typing import Callable

from popcon.protocol import TIME_WINDOW

#: Signatures remembered at most: about 20 MB when full, enough for 500 signed datagrams a
#: second.
REPLAY_MEMORY = 200_000


class Replays:
    """The signatures taken, by the minute of their ``t`` line (``clock``: seconds since the
    epoch)."""

    __slots__ = ("clock", "limit", "minute", "remembered", "signatures")

    def __init__(self, clock: Callable[[], float], limit: int = REPLAY_MEMORY) -> None:
        self.clock = clock
        self.limit = limit
        self.signatures: dict[int, set[bytes]] = {}
        self.remembered = 0  # signatures in all the sets
        self.minute = 0  # the clock's minute when minutes were last forgotten

    def take(self, minute: int, signature: bytes) -> str:
        """``""`` when ``signature``, of a datagram sent in ``minute``, is in the window and
        new (it is remembered now); else the reason the datagram is dropped."""
        now = int(self.clock() // 60)
        if not -TIME_WINDOW <= minute - now <= TIME_WINDOW:
            return "stale"
        signatures = self.signatures
        if now != self.minute:
            self.minute = now
            for old in [old for old in signatures if old < now - TIME_WINDOW]:
                self.remembered -= len(signatures.pop(old))
        taken = signatures.get(minute)
        if taken is None:
            taken = signatures[minute] = set()
        elif signature in taken:
            return "replay"
        if self.remembered >= self.limit:
            return "replay_cap"
        taken.add(signature)
        self.remembered += 1
        return ""
