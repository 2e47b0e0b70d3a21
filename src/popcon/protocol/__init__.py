"""The wire protocol in code (``docs/protocol.md``)."""
