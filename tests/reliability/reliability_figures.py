"""The figures each reliability test measures: written to a JSON file and printed (shown with ``pytest -s``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The repository root (for child processes that need ``alwb`` without site-packages).
REPO = Path(__file__).resolve().parents[2]


def report_figures(tmp_path: Path, name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` to ``tmp_path/<name>.json`` and print them on one line."""
    out = Path(tmp_path) / f"{name}.json"
    out.write_text(json.dumps(figures, indent=1, sort_keys=True))
    print(f"\n[{name}] " + json.dumps(figures, sort_keys=True), flush=True)
    return out
