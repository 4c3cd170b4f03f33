"""The Start page in Chromium (issue 36): a source is checked before anything is created, a class list with a repeated
name is refused, and a created project lists the files it did not import with the reasons."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, make_shapes

pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

import _uiserver  # noqa: E402

TIMEOUT_MS = 90_000


def _fill(page, label: str, value: str) -> None:  # noqa: ANN001
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Tab")  # a text box sends its value when it loses the focus


def test_start_page_checks_the_source_first_and_lists_rejected_files(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("not an image")
    (tmp_path / "texts" / "broken.png").write_bytes(b"not a png")
    make_shapes(tmp_path / "mixed", 2, layout="flat")
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not a png")
    expect.set_options(timeout=TIMEOUT_MS)
    with _uiserver.serve(None, tmp_path / "server.log") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/start")
            page.get_by_role("heading", name="alwb workbench", exact=True).wait_for()
            page.get_by_role("tab", name="Create a project").click()
            create = page.get_by_role("button", name="Create project")

            # a folder of files none of which is a usable image: refused, the files named, nothing created
            _fill(page, "New project folder", str(tmp_path / "p1"))
            _fill(page, "Image folder or CSV manifest", str(tmp_path / "texts"))
            create.click()
            expect(page.get_by_text("None of the files in")).to_be_visible()
            expect(page.get_by_text("broken.png", exact=False)).to_be_visible()
            assert not (tmp_path / "p1").exists()

            # a repeated class name: refused
            _fill(page, "Image folder or CSV manifest", str(tmp_path / "mixed"))
            _fill(page, "Classes (comma-separated; optional when the folders name them)", "circle,square,circle")
            create.click()
            expect(page.get_by_text("These class names appear more than once: circle")).to_be_visible()
            assert not (tmp_path / "p1").exists()

            # a good folder with one broken file: created; the broken file is listed with its reason
            _fill(page, "Classes (comma-separated; optional when the folders name them)", "circle,square,triangle")
            create.click()
            expect(page.get_by_role("heading", name="Open project")).to_be_visible()
            page.get_by_text("1 file(s) not imported, and why").click()
            expect(page.locator('[data-testid="stDataFrame"]').last).to_be_visible()
            assert (tmp_path / "p1" / "alwb.sqlite").is_file()
            body = page.locator('[data-testid="stMain"]').inner_text()
            assert "alwb add" not in body and "`" not in body
        finally:
            browser.close()
    from alwb.project import Project

    with Project.open(tmp_path / "p1") as proj:
        rejected = proj.store.rejected()
        assert [Path(r["path"]).name for r in rejected] == ["broken.png"] and rejected[0]["reason"]
        assert proj.store.item_count() == 6
