"""The read side of the collector: answers and totals from the SQLite database, read-only.

- :mod:`~.connection`: read-only connections and the snapshot every answer reads in.
- :mod:`~.window`: which tier answers a window and the buckets counted; the one clock seam.
- :mod:`~.sql`: the SQL the answers share (usage and edge rows, source filters).
- :mod:`~.counting`: raw record counts → ``processes``/``direct``/``transitive``.
- :mod:`~.libraries` (``libraries``, ``library_detail``) and :mod:`~.environments`
  (``environments``, ``unused``, ``user_installed``): raw answers, JSON-ready.
- :mod:`~.totals`: the totals behind the Prometheus counters of ``/metrics``.
- :mod:`~.params`, :mod:`~.privacy` and :mod:`~.answers`: the API's and the CLI's parameters,
  the hiding of small counts, and the answers they serve.

Every function takes a connection and plain values; none reads the clock where a ``now`` is
passed. Times in answers are ISO-8601 UTC strings (``2026-11-26T14:40:00Z``). Table and tier
facts come from :mod:`popcon.server.storage.schema`, never from the writer.
"""
