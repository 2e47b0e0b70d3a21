"""The receiving side: the UDP loop (``receiver``) and the counting of decoded datagrams into
the writer's jobs under the caps (``ingest``). It calls into ``popcon.server.storage``, never
the reverse."""
