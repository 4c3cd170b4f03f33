"""Settings imports a backbone's weights file from the browser (issue 36): checked as ``alwb weights add`` does,
kept for the machine, its SHA-256 shown; in Chromium against a real ``alwb ui``."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, SHAPES, make_shapes

pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

import _uiserver  # noqa: E402
from weights_helpers import save_state_dict  # noqa: E402

TIMEOUT_MS = 90_000


def test_settings_imports_a_weights_file_and_shows_its_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect, sync_playwright

    from alwb.learning import backbones
    from alwb.project import Project

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # this test's own weights folder (the server's too)
    make_shapes(tmp_path / "shapes", 3, layout="flat")
    root = tmp_path / "project"
    with Project.create(root, classes=list(SHAPES)) as proj:
        proj.add_images(tmp_path / "shapes")
    weights = save_state_dict(tmp_path / "made" / "r18.pth", seed=3)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert not backbones.weights_available("resnet18")
    expect.set_options(timeout=TIMEOUT_MS)
    with _uiserver.serve(root, tmp_path / "server.log") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/settings")
            page.get_by_role("heading", name="Settings", exact=True).wait_for()
            info = page.locator('[data-testid="stAlert"]').first
            expect(info).to_contain_text("These images are small and greyscale (20 px)")
            assert not re.search(r"`|https?://|\[Errno|NAME\b", info.inner_text())
            # small images: the import is folded away with the reason
            page.get_by_text("Pretrained features (not used: these images are small, 20 px)").click()
            form = page.locator('[data-testid="stForm"]').filter(has_text="Import weights")
            # the first backbone of the list is preselected (a dropdown would close at the panel's 2-second refresh)
            assert backbones.backbone_names()[0] == "resnet18"
            expect(form.get_by_role("combobox")).to_have_value("resnet18")
            form.locator('input[type="file"]').set_input_files(str(weights))
            expect(form.get_by_text("r18.pth")).to_be_visible()
            form.get_by_role("button", name="Import weights").click()
            expect(
                page.get_by_text(f"Weights for resnet18 imported (a file of your own, SHA-256 {digest})")
            ).to_be_visible()
        finally:
            browser.close()
    assert backbones.weights_available("resnet18")
    assert backbones.resolve_weights("resnet18", download=False).sha256 == digest
