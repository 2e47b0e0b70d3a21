"""The popcon collector (extra ``popcon[server]``): receive datagrams, store, answer.

- :mod:`popcon.protocol.decode`: datagram → typed record or rejection reason.
- :mod:`popcon.server.receive.receiver`: the UDP loop (:class:`Receiver`) and :class:`Collector`.
- :mod:`popcon.server.storage.store`: SQLite schema, caps, tiers, the one :class:`Writer`.
- :mod:`popcon.server.query.queries`: read-only answers and totals.

Storage design: ``docs/collector-storage.md``. Importing this package imports only the
standard library; the app (``popcon serve``), HTTP API and metrics live in their own modules.
"""

from popcon.server.receive.receiver import Collector, Receiver
from popcon.server.storage.store import StoreSettings, Tier, Writer

__all__ = ["Collector", "Receiver", "StoreSettings", "Tier", "Writer"]
