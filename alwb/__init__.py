"""alwb: an active-learning labeling workbench for images.

The library never imports Streamlit; ``ui/`` is a thin shell over :class:`alwb.loop.Project`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import AlwbError  # noqa: E402

__all__ = ["AlwbError", "__version__"]
