"""Start: open or create a project (folder, CSV manifest or uploaded zip); define and rename classes."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from alwb.errors import AlwbError
from alwb.ingest import default_image_root
from alwb.loop import Project
from alwb.store.location import is_project
from alwb.ziputil import content_root, safe_extract
from ui import state
from ui.text import md_escape
from ui.views.common import show_flash


def _create(folder: str, source: Path | None, classes: list[str]) -> None:
    root = Path(folder).expanduser()
    proj = Project.create(root, classes=classes or None)
    try:
        image_root = default_image_root(source) if source is not None else None
        if image_root is not None:  # as 'alwb init': paths under the folder imported are stored relative to it
            proj.store.set_image_root(image_root)
        if source is not None:
            try:
                rep = proj.add_images(source, classes=classes or None)
            except AlwbError as exc:  # the project exists now: open it and say what to fix
                state.flash(f"Project created, but no images were imported: {exc}", "error")
            else:
                state.flash(rep.summary().splitlines()[0] + ".")
    finally:
        proj.close()
    state.set_project(root)


def render() -> None:
    """Draw the page."""
    st.title("alwb workbench")
    show_flash()
    with state.open_project() as proj:
        if proj is not None:
            st.subheader("Open project")
            st.text(str(proj.root))
            s = proj.status()["items"]
            st.caption(f"{s['total']} images · {s['labeled']} answered · {s['rejected']} rejected")
            st.caption(md_escape(proj.store.image_root().describe()))
            _classes(proj)
            _add_images(proj)
            if st.button("Close project"):
                state.set_project(None)
                st.rerun()
            return
    tab_open, tab_new = st.tabs(["Open a project", "Create a project"])
    with tab_open:
        path = st.text_input("Project folder", placeholder="/path/to/project")
        if st.button("Open", type="primary", disabled=not path):
            if is_project(Path(path).expanduser()):
                state.set_project(Path(path).expanduser())
                st.rerun()
            else:
                st.error("That folder is not an alwb project (no alwb.sqlite).")
    with tab_new:
        folder = st.text_input("New project folder", placeholder="/path/to/new-project")
        kind = st.radio(
            "Images", ["A folder or CSV manifest on this machine", "Upload a zip of images"], horizontal=True
        )
        src_path = upload = None
        if kind.startswith("A folder"):
            src_path = st.text_input(
                "Image folder or CSV manifest",
                help="ImageFolder tree (class subfolders become labels), flat folder, or a "
                "CSV with path and optional label columns",
            )
        else:
            upload = st.file_uploader("Zip of images", type=["zip"])
        classes_raw = st.text_input("Classes (comma-separated; optional when the folders name them)")
        # with "upload" chosen, the button waits for the upload to finish (else the project would start empty)
        waiting = not kind.startswith("A folder") and upload is None
        if st.button("Create project", type="primary", disabled=not folder or waiting):
            classes = [c.strip() for c in classes_raw.split(",") if c.strip()]
            try:
                root = Path(folder).expanduser()
                source: Path | None = None
                if upload is not None:
                    root.mkdir(parents=True, exist_ok=True)
                    dest = root / "uploads" / (re.sub(r"[^A-Za-z0-9_.-]", "_", Path(upload.name).stem) or "upload")
                    safe_extract(upload, dest)
                    source = content_root(dest)
                elif src_path:
                    source = Path(src_path).expanduser()
                _create(str(root), source, classes)
            except AlwbError as exc:
                st.error(md_escape(exc))
            else:
                st.rerun()


def _classes(proj: Project) -> None:
    st.subheader("Classes")
    classes = proj.classes
    if classes:
        st.dataframe({"#": list(range(1, len(classes) + 1)), "class": classes}, hide_index=True)
    with st.form("classes"):
        new = st.text_input("Add classes (comma-separated)")
        cols = st.columns(2)
        old = cols[0].selectbox("Rename class", ["—", *classes])
        renamed = cols[1].text_input("New name")
        if st.form_submit_button("Save classes"):
            try:
                added = proj.store.add_classes([c for c in new.split(",") if c.strip()]) if new.strip() else []
                if old != "—" and renamed.strip():
                    proj.store.rename_class(old, renamed)
                state.reset_batch()
                state.flash(f"Classes saved ({len(added)} added).")
            except AlwbError as exc:
                state.flash(f"Not saved: {exc}", "error")
            st.rerun()


def _add_images(proj: Project) -> None:
    with st.expander("Add images"):
        src = st.text_input("Image folder or CSV manifest", key="add_src")
        upload = st.file_uploader("…or a zip of images", type=["zip"], key="add_zip")
        if st.button("Import", disabled=not (src or upload)):
            try:
                if upload is not None:
                    dest = proj.root / "uploads" / (re.sub(r"[^A-Za-z0-9_.-]", "_", Path(upload.name).stem) or "up")
                    safe_extract(upload, dest)
                    rep = proj.add_images(content_root(dest))
                else:
                    rep = proj.add_images(Path(src).expanduser())
                state.reset_batch()
                state.flash(rep.summary().splitlines()[0] + ".")
            except AlwbError as exc:
                state.flash(f"Import failed: {exc}", "error")
            st.rerun()
