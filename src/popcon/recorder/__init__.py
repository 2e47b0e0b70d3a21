"""The recorder: the code that runs inside every Python process of an enabled environment.

Standard library only, and it imports nothing from popcon: ``popcon enable`` copies these files
verbatim into the environment's site-packages (``popcon.admin.enable.RECORDER_FILES`` names the
copies), where each runs as a top-level module. ``hook`` is the start-up hook, ``core`` the
classification and sending, ``map`` the module → distribution map builder, ``rare`` the rarely
needed parts. This package file is never copied; it stays empty so that importing a recorder
module from popcon's own package costs nothing more.
"""
