"""When the recorder sends the environment's inventory again: at doubling waits while it is
young (the stamp's size counts the sends), then every ``POPCON_INVENTORY_INTERVAL``; UDP cannot
tell whether a collector listened to the first one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

INTERVAL = 6400.0  # seconds: the waits are 50, 100, 200, ... 3200, then 6400


def _due(recorder, tmp_path: Path, sent: int, age: float) -> tuple[bool, int]:
    """Whether a process sends the inventory when its stamp says ``sent`` sends, the last
    ``age`` seconds ago; and the stamp's size afterwards."""
    core = recorder.core
    site = tmp_path / "site-packages"
    (site / "popcon-cache").mkdir(parents=True, exist_ok=True)
    preview = tmp_path / "preview"
    preview.unlink(missing_ok=True)
    config = core.config_of(
        {
            "POPCON_ENV": "lab",
            "POPCON_PREVIEW": str(preview),
            "POPCON_INVENTORY_INTERVAL": str(INTERVAL),
        }
    )
    core._map = core.module_map([], {}, [("0a1b2c3d", [("six", "1.16.0")])], [(str(site), 0)])
    stamp = Path(core._inventory_stamp(config, core._map, "0a1b2c3d"))
    if sent:
        stamp.write_bytes(b"." * sent)
        then = time.time() - age
        os.utime(stamp, (then, then))
    else:
        stamp.unlink(missing_ok=True)
    core._send_inventory_if_due(config)
    return preview.exists(), stamp.stat().st_size if stamp.exists() else 0


def test_the_first_inventory_is_sent_and_counted(recorder, tmp_path: Path) -> None:
    assert _due(recorder, tmp_path, 0, 0) == (True, 1)


@pytest.mark.parametrize("sent", range(1, 10))
def test_young_inventories_are_sent_again_at_doubling_waits(recorder, tmp_path, sent) -> None:
    young = recorder.core.YOUNG_SENDS
    wait = INTERVAL / 2 ** (young - sent) if sent < young else INTERVAL
    assert _due(recorder, tmp_path, sent, wait - 5) == (False, sent)
    assert _due(recorder, tmp_path, sent, wait + 5) == (True, min(sent + 1, young))


def test_the_young_waits_add_up_to_about_one_interval(recorder) -> None:
    young = recorder.core.YOUNG_SENDS
    waits = [3600 / 2 ** (young - sent) for sent in range(1, young)]
    assert [round(sum(waits[:n]) / 60) for n in range(1, young)] == [1, 3, 7, 14, 29, 59]
