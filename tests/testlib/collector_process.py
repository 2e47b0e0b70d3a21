"""A bare collector process for the tests that kill it or fill its disk.

    python collector_process.py DB_PATH

Prints ``listening <port>`` once it receives on 127.0.0.1, stops on SIGTERM; exit status 1
when rows could not be written by then. SIGXFSZ is ignored so that a file-size limit (the
tests' stand-in for a full disk) makes writes fail with an error instead of killing the
process (Python ignores it already; this says so where the tests rely on it).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from popcon.server.receive.receiver import Collector


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    collector = Collector(sys.argv[1], ("127.0.0.1", 0))
    collector.start()
    print("listening", collector.address[1], flush=True)
    stop.wait()
    return 1 if collector.stop() else 0


if __name__ == "__main__":
    sys.exit(main())
