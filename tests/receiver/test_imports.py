"""The web process imports no worker code and no twilio (docs/contracts.md, "Layout and imports")."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import receiver

ROOT = Path(__file__).resolve().parents[2]


def test_importing_every_receiver_module_loads_no_worker_or_twilio_module() -> None:
    """A fresh interpreter that imports all of receiver/ has no `workers` or `twilio` module."""
    modules = sorted(info.name for info in pkgutil.walk_packages(receiver.__path__, "receiver."))
    assert {"receiver.app", "receiver.callbacks"} <= set(modules)
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(modules) <= set(loaded)
    forbidden = [name for name in loaded if name.split(".")[0] in ("workers", "twilio", "rq.worker")]
    assert forbidden == []


def test_the_app_factory_path_is_in_the_receiver() -> None:
    """uvicorn runs `receiver.app:create_app`; the worker's job path is in workers/."""
    from callstate.jobqueue import APPLY_EVENTS  # noqa: PLC0415

    assert APPLY_EVENTS.startswith("workers.")
