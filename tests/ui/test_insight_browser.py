"""The Map page in a real browser: a lasso drawn with the mouse over points of every colour group selects them, and
one click labels exactly those items in one transaction (Debian's Chromium through Playwright, a real ``alwb ui``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CHROMIUM
from insight_helpers import build, copy_project

pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
from test_browser import TIMEOUT_MS, browser_page, choose_with_mouse, open_page, serve, settle  # noqa: E402, F401, F811

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)


@pytest.mark.flaky(reruns=1, reruns_delay=5)
def test_lasso_on_the_map_bulk_labels_the_selected_items(browser_page, tmp_path: Path) -> None:  # noqa: ANN001, F811
    from playwright.sync_api import expect

    from alwb import insight
    from alwb.project import Project

    root = copy_project(build(tmp_path / "template"), tmp_path / "proj")
    with Project.open(root) as proj:
        ids = {int(i) for i in insight.load_map(proj)["ids"]}
        before = {int(r["item_id"]): r["class"] for r in proj.store.current_labels()}
        batches = proj.store.con.execute("SELECT COUNT(DISTINCT batch_id) FROM labels").fetchone()[0]
    page = browser_page
    with serve(root, tmp_path / "server.log") as url:
        open_page(page, f"{url}/map", "Map")
        drag = page.locator(".js-plotly-plot .nsewdrag").first
        drag.wait_for()
        box = drag.bounding_box()
        assert box is not None
        # a lasso along the inside of the plot area: every point is inside it, of every colour group
        x0, y0, x1, y1 = box["x"] + 3, box["y"] + 3, box["x"] + box["width"] - 3, box["y"] + box["height"] - 3
        page.mouse.move(x0, y0)
        page.mouse.down()
        for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
            page.mouse.move(x, y, steps=8)
        page.mouse.up()
        heading = page.get_by_role("heading", name=f"{len(ids)} selected")
        expect(heading).to_be_visible(timeout=TIMEOUT_MS)
        settle(page)
        choose_with_mouse(page, page.get_by_role("combobox", name="Label them all as"), "triangle")
        settle(page)
        page.get_by_role("button", name=f"Label {len(ids)} image(s)").click()
        expect(page.get_by_text("in one batch")).to_be_visible(timeout=TIMEOUT_MS)
    with Project.open(root) as proj:
        after = {int(r["item_id"]): r["class"] for r in proj.store.current_labels()}
        batches_after = proj.store.con.execute("SELECT COUNT(DISTINCT batch_id) FROM labels").fetchone()[0]
    assert {i for i, c in after.items() if c == "triangle"} == ids  # exactly the lassoed items
    assert set(after) == set(before) | ids
    assert batches_after == batches + 1
