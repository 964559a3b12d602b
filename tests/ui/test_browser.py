"""The Dagster UI in headless Chromium (Debian's package, driven by Playwright).

Screenshots go to test-artifacts/ui/; with WSOVVIS_UPDATE_SCREENSHOTS=1 the mask preview is
also written to docs/screenshots/ (commit it). The docs' asset graph is not taken here (this one
is mid-session, on test data, with every facet on): scripts/screenshots.py takes it after the
demo.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from wsovvis_ops.browser import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
README_SHOTS = REPO / "docs" / "screenshots"
SIX_ASSETS = (
    "patched_vnext", "deform_attn_ops", "video_partitions", "mask_pngs", "tube_json",
    "trained_model",
)
# UI preferences live in localStorage: show every asset-node facet (description and owner are
# off by default), collapse the left navigation, lay the graph out left to right.
UI_PREFERENCES = {
    "asset-node-facets": [
        "unsynced-tag", "description", "owner", "latest-event", "checks", "status", "kind-tag",
        "partitions",
    ],
    "dagster-nav-collapsed": True,
    "asset-graph-direction": "horizontal",
    "communityNux": "1",
}
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


def _save(page, name: str, *, readme: bool = False, **kwargs) -> Path:
    """Screenshot to test-artifacts/ui/<name>; also docs/screenshots/ when asked to."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **kwargs)
    if readme and os.environ.get("WSOVVIS_UPDATE_SCREENSHOTS") == "1":
        assert path.stat().st_size < 300_000, f"{name}: too big for the README"
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SHOTS / name)
    return path


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    init = "\n".join(
        f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))});"
        for k, v in UI_PREFERENCES.items()
    )
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data-dir
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        context.add_init_script(init)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context, request):
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
    yield page
    if errors:  # kept as an artefact: the UI logs some noise, so they do not fail the test
        (ARTIFACTS / f"{request.node.name}.console.txt").write_text("\n".join(errors))
    page.close()


def test_asset_graph_shows_the_six_assets_with_descriptions_owners_and_kinds(
    dagster_ui, ui_runs, page
):
    groups = sorted({n["groupName"] for n in dagster_ui.gql("{ assetNodes { groupName } }")[
        "assetNodes"]})
    expanded = ",".join(f"global@global:{g}" for g in groups)  # every group open
    page.set_viewport_size({"width": 1600, "height": 900})
    page.goto(f"{dagster_ui.url}/asset-groups?expanded={expanded}")

    graph = page.locator("svg foreignObject")
    for name in SIX_ASSETS:
        graph.get_by_text(name, exact=True).first.wait_for(state="visible")
    # Hide the group list and re-fit the graph (double-click on the empty canvas corner), so
    # that it is drawn at full detail (zoom >= 0.6) rather than as bare names.
    page.locator("xpath=//input[@placeholder='Jump to…']/following::button[1]").click()
    page.mouse.dblclick(80, 120)
    description = dagster_ui.gql(
        '{ assetNodeOrError(assetKey: {path: ["mask_pngs"]}) { ... on AssetNode { description'
        " } } }")["assetNodeOrError"]["description"]
    graph.get_by_text(description.split("`")[0][:30].strip()).first.wait_for(state="visible")
    graph.get_by_text("wsovvis").first.wait_for(state="visible")
    graph.get_by_text("PyTorch", exact=True).first.wait_for(state="visible")
    for name in SIX_ASSETS:  # still all in view after the re-fit
        assert graph.get_by_text(name, exact=True).first.is_visible(), name
    page.wait_for_timeout(800)  # the re-fit is animated
    _save(page, "asset_graph.png")


def test_asset_page_shows_owner_kinds_group_and_gpu_tag(dagster_ui, ui_runs, page):
    page.goto(f"{dagster_ui.url}/assets/mask_pngs?view=overview")
    for text in ("gpu: true", "wsovvis", "PyTorch", "masks"):
        page.get_by_text(text, exact=True).first.wait_for(state="visible")
    _save(page, "mask_pngs_overview.png", full_page=True)


def test_partition_page_shows_the_mask_preview_image(dagster_ui, ui_runs, page):
    key = ui_runs.single_key
    page.goto(f"{dagster_ui.url}/assets/mask_pngs?view=partitions&partition={key}")
    row = page.locator("tr", has=page.get_by_text("preview", exact=True))
    # Markdown over 1000 characters (any real image) is behind a "[Show Markdown]" dialog
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    image = dialog.locator("img")
    image.wait_for(state="visible")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    src = image.get_attribute("src")
    assert src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
    assert key in image.get_attribute("alt")
    width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    box = image.bounding_box()
    assert width >= 100 and height >= 20 and box["width"] >= 100 and box["height"] >= 20

    # the same picture that the materialisation recorded
    data = dagster_ui.gql(
        """query($p: String!) { assetOrError(assetKey: {path: ["mask_pngs"]}) { ... on Asset {
             assetMaterializations(partitions: [$p], limit: 1) { metadataEntries { label
               ... on MarkdownMetadataEntry { mdStr } } } } } }""", {"p": key},
    )
    (event,) = data["assetOrError"]["assetMaterializations"]
    md = next(m["mdStr"] for m in event["metadataEntries"] if m["label"] == "preview")
    assert src in md
    page.get_by_text(key, exact=True).first.wait_for(state="visible")
    _save(page, "mask_preview.png", readme=True)
