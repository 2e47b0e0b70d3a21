"""The popcon collector (extra ``popcon[server]``): receive datagrams, store, answer.

- :mod:`popcon.protocol.decode`: datagram → typed record or rejection reason.
- :mod:`popcon.server.receive.receiver`: the UDP loop (:class:`Receiver`) and :class:`Collector`;
  :mod:`popcon.server.receive.ingest`: decoded datagrams counted into jobs, under the caps.
- :mod:`popcon.server.storage.schema`, :mod:`popcon.server.storage.rows` and
  :mod:`popcon.server.storage.writer`: the SQLite schema, tiers and settings; the jobs and the
  catalog of ids; the one :class:`Writer`, which the receiver hands jobs to.
- :mod:`popcon.server.query`: read-only answers and totals.

Storage design: ``docs/collector-storage.md``. Importing this package imports only the
standard library; the app (``popcon serve``), HTTP API and metrics live in their own modules.
"""

from popcon.server.receive.receiver import Collector, Receiver
from popcon.server.storage.schema import StoreSettings, Tier
from popcon.server.storage.writer import Writer

__all__ = ["Collector", "Receiver", "StoreSettings", "Tier", "Writer"]
