"""Showing text from files and users as text: never as HTML, never as Markdown."""

from __future__ import annotations

import re

_MD = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:&])")


def md_escape(text: object) -> str:
    """Backslash-escape everything Markdown (and Streamlit's ``:color[...]`` / ``$math$``) would interpret."""
    return _MD.sub(r"\\\1", str(text)).replace("\n", " ")
