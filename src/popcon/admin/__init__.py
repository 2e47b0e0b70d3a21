"""Putting the recorder into environments and looking at it: ``enable``, ``disable`` and
``status`` (``enable``), ``preview`` and the ``demo``. Standard library only, like the
``popcon`` command itself: the collector's dependencies are not needed here."""
