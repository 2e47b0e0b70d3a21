"""The recorder: the code that runs inside every Python process of an enabled environment.

The rules of this room:

- Standard library only, and nothing from popcon: ``popcon enable`` copies ``hook``, ``core``,
  ``map`` and ``rare`` verbatim into the environment's site-packages
  (``popcon.admin.enable.RECORDER_FILES`` names the copies), where each runs as a top-level
  module and finds the others by their copies' names, never by import from this package.
- Cheap to load: ``hook`` is the start-up hook every process runs, ``core`` the classification
  and sending that a process importing a library loads, ``map`` (the module → distribution map
  builder) and ``rare`` (the rarely needed parts) load only when needed. Types are comments,
  which the interpreter never evaluates; their names come from ``_types.pyi``, imported for
  the type checker alone.
- The modules use each other's public names only; each one's header says what it offers the
  others. The protocol's terms are spelled once on this side, in ``core``, ``rare`` and
  ``map``; a test pins them to :mod:`popcon.protocol`.

This package file is never copied; it stays empty so that importing a recorder module from
popcon's own package costs nothing more.
"""
