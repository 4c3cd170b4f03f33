"""Start: open or create a project (folder, CSV manifest or uploaded zip); define and rename classes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import streamlit as st

from alwb.errors import AlwbError
from alwb.intake.ingest import check_source, default_image_root, parse_class_list
from alwb.intake.ziputil import content_root, extract_upload, move_into_uploads, safe_extract
from alwb.project import Project
from ui import state
from ui.text import md_escape
from ui.views.common import show_flash


def _create(root: Path, source: Path | None, classes: list[str], staged: Path | None = None) -> None:
    """Create the project in ``root`` and import ``source`` (local mode only); ``staged``: an upload extracted
    outside the project, moved into a fresh ``uploads/`` folder of the new project first."""
    proj = Project.create(root, classes=classes or None)
    try:
        if staged is not None:
            source = content_root(move_into_uploads(staged, root))
        image_root = default_image_root(source) if source is not None else None
        if image_root is not None:  # as 'alwb init': paths under the folder imported are stored relative to it
            proj.set_image_root(image_root)
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


def _server_path_allowed(path: Path) -> str | None:
    """Why images may not be imported from ``path`` on this server (None: they may). Free paths only in local mode;
    a served project only from the folders given to ``alwb ui --import-dir``."""
    if state.local_mode():
        return None
    dirs = state.import_dirs()
    if not dirs:
        return "This workbench imports uploads only (the server was started without an import folder)."
    resolved = path.resolve()
    if any(resolved.is_relative_to(d) for d in dirs):
        return None
    return "That folder is outside the folders this workbench may import from."


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
            st.caption(md_escape(proj.reads.image_root().describe()))
            _rejected(proj)
            _classes(proj)
            _add_images(proj)
            if state.local_mode() and st.button("Close project"):
                state.set_project(None)
                st.rerun()
            return
    if not state.local_mode():  # a server started without a project and open to the network: nothing to open
        st.info("This workbench serves no project. Its administrator starts it with the project to serve.")
        return
    tab_open, tab_new = st.tabs(["Open a project", "Create a project"])
    with tab_open:
        path = st.text_input("Project folder", placeholder="/path/to/project")
        if st.button("Open", type="primary", disabled=not path):
            if Project.exists(Path(path).expanduser()):
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
            root = Path(folder).expanduser()
            staged: Path | None = None
            try:  # everything is checked before anything is written
                classes = parse_class_list(classes_raw)
                if Project.exists(root):
                    raise AlwbError("That folder already holds an alwb project: open it on the other tab.")
                source: Path | None = None
                if upload is not None:  # checked and extracted outside the project, moved in once it exists
                    staged = Path(tempfile.mkdtemp(prefix="alwb-upload-"))
                    if not safe_extract(upload, staged):
                        raise AlwbError("The zip holds no files.")
                    check_source(content_root(staged))
                elif src_path:
                    source = Path(src_path).expanduser()
                    check_source(source)
                _create(root, source, classes, staged)
            except AlwbError as exc:
                st.error(md_escape(exc))
            else:
                st.rerun()
            finally:
                if staged is not None:
                    shutil.rmtree(staged, ignore_errors=True)


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
                names = parse_class_list(new)
                known = sorted(set(names) & set(classes))
                if known:
                    raise AlwbError(f"Already a class: {', '.join(known)}.")
                added = proj.edit_classes(names, (old, renamed) if old != "—" and renamed.strip() else None)
                state.reset_batch()
                state.flash(f"Classes saved ({len(added)} added).")
            except AlwbError as exc:
                state.flash(f"Not saved: {exc}", "error")
            st.rerun()


def _rejected(proj: Project) -> None:
    """The files not imported, each with the reason."""
    rows = proj.reads.rejected()
    if not rows:
        return
    with st.expander(f"{len(rows)} file(s) not imported, and why"):
        st.dataframe(
            {"file": [str(r["path"]) for r in rows], "reason": [str(r["reason"] or "") for r in rows]},
            hide_index=True,
            width="stretch",
        )


def _add_images(proj: Project) -> None:
    with st.expander("Add images"):
        by_path = state.local_mode() or bool(state.import_dirs())
        src = st.text_input("Image folder or CSV manifest", key="add_src") if by_path else ""
        upload = st.file_uploader("…or a zip of images" if by_path else "A zip of images", type=["zip"], key="add_zip")
        if st.button("Import", disabled=not (src or upload)):
            try:
                if upload is not None:
                    rep = proj.add_images(extract_upload(upload, proj.root))
                else:
                    source = Path(src).expanduser()
                    refused = _server_path_allowed(source)
                    if refused:
                        raise AlwbError(refused)
                    rep = proj.add_images(source)
                state.reset_batch()
                state.flash(rep.summary().splitlines()[0] + ".")
            except AlwbError as exc:
                state.flash(f"Import failed: {exc}", "error")
            st.rerun()
