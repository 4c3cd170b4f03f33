"""Export: the dataset and the model as zip files, the same content as ``alwb export``."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import streamlit as st

from alwb.errors import AlwbError
from alwb.io.export import export_project
from ui import state
from ui.text import md_escape
from ui.views.common import ago, need_project


def _zip_dir(folder: Path, zip_path: Path, *, include: list[Path]) -> Path:
    tmp = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for base in include:
            files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
            for f in files:
                zf.write(f, f.relative_to(folder).as_posix())
    tmp.replace(zip_path)
    return zip_path


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        st.title("Export")
        st.write(
            "The labeled dataset (train and validation ImageFolder trees with metadata.jsonl, which Hugging Face "
            "datasets loads; a manifest; Label Studio tasks with the model's guesses) and the trained model "
            "(PyTorch and ONNX), as zip files: "
            "the same content as an export from the command line."
        )
        include_pseudo = st.checkbox("Include pseudo-labels (marked as such in the manifest)")
        out = proj.root / "exports" / "latest"
        if st.button("Prepare export", type="primary"):
            with st.spinner("Exporting…"):
                try:
                    if out.exists():
                        shutil.rmtree(out)
                    rep = export_project(proj, out, include_pseudo=include_pseudo)
                except AlwbError as exc:
                    st.error(md_escape(exc))
                    st.stop()
                _zip_dir(
                    out,
                    out.parent / "dataset.zip",
                    include=[
                        out / "dataset",
                        out / "manifest.csv",
                        out / "manifest.parquet",
                        out / "labelstudio.json",
                        out / "labelstudio.xml",
                    ],
                )
                if rep.model_dir is not None:
                    _zip_dir(out, out.parent / "model.zip", include=[out / "model"])
                else:
                    (out.parent / "model.zip").unlink(missing_ok=True)
                state.remember("export_time", time.time())
                st.success(f"Exported {rep.n_images} image(s) ({rep.n_pseudo} pseudo-labels).")
                if rep.changed:
                    st.warning(
                        md_escape(
                            f"{len(rep.changed)} image(s) were left out because their file changed since it was "
                            "imported (the label was given to the old content): "
                            + "; ".join(f"{path}: {reason}" for path, reason in rep.changed[:20])
                        )
                    )
        ds_zip, model_zip = out.parent / "dataset.zip", out.parent / "model.zip"
        if ds_zip.is_file():
            st.caption(f"Files prepared {ago(ds_zip.stat().st_mtime)}; prepare again to include newer labels.")
            cols = st.columns(2)
            with open(ds_zip, "rb") as fh:
                cols[0].download_button(
                    "Download dataset.zip",
                    fh,
                    file_name="dataset.zip",
                    mime="application/zip",
                    key="dl_dataset",
                    on_click="ignore",
                )
            if model_zip.is_file():
                with open(model_zip, "rb") as fh:
                    cols[1].download_button(
                        "Download model.zip",
                        fh,
                        file_name="model.zip",
                        mime="application/zip",
                        key="dl_model",
                        on_click="ignore",
                    )
            else:
                cols[1].info("No trained model yet.")
