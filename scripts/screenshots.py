"""The README's two pictures: the asset graph after the demo, and real masks on a DAVIS clip.

Run after `bash scripts/demo.sh` (default settings), from the repository root:

    python -m scripts.screenshots                 # both pictures
    python -m scripts.screenshots --graph         # docs/screenshots/asset_graph.png only
    python -m scripts.screenshots --real-masks    # docs/screenshots/real_masks.jpg only

--graph: reuses a webserver of this instance (DAGSTER_HOME, default .dagster_home) on
127.0.0.1:PORT, or starts one with scripts/services.sh (another port if PORT is taken by
something else) and stops it afterwards. It checks that the demo materialised its assets, opens
the global asset lineage with every group expanded in headless Debian Chromium (Playwright, the
`dev` extra), with the UI's default preferences, waits until every asset is drawn with its
status, fits the graph to the view, and saves the PNG.

--real-masks: the embedded CPU predictor on a real DAVIS-2016 sequence (default
../shared/data/davis, horsejump-high), through the library's `segment_video` path (frames copied
into a temporary LV-VIS layout; PNGs written there), drawn with `preview.overlay_montage` as a
row of frames. DAVIS is CC BY-NC 4.0: the README credits it under the picture.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from wsovvis_ops.browser import CHROMIUM_ARGS
from wsovvis_ops.pg_cluster import free_port

REPO = Path(__file__).resolve().parents[1]

SHOTS = REPO / "docs" / "screenshots"
DEMO_ASSETS = ("video_partitions", "mask_pngs", "tube_json", "trained_model")
VIEWPORT = {"width": 1920, "height": 1080}  # a common screen; the fit then shows node details
# true once every named asset's node shows its rows and a materialised status
DRAWN_WITH_STATUS = """names => names.every(name =>
  [...document.querySelectorAll("svg foreignObject")].some(e =>
    e.textContent.startsWith(name + "Latest event")
    && /Materialized|100% filled/.test(e.textContent)))"""
MAX_JPEG_BYTES = 200_000
MAX_PNG_BYTES = 300_000

INSTANCE_QUERY = """{ instance { info } workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus } } } }"""
ASSETS_QUERY = """{ assetNodes { assetKey { path } groupName isMaterializable isPartitioned
  partitionStats { numMaterialized numPartitions }
  assetMaterializations(limit: 1) { timestamp } } }"""


class ScreenshotError(RuntimeError):
    """Something the maintainer has to fix first (no demo run, no browser, ...)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--graph", action="store_true", help="only the asset-graph screenshot")
    p.add_argument("--real-masks", action="store_true", help="only the real-masks montage")
    p.add_argument("--port", type=int, default=int(os.environ.get("WSOVVIS_UI_PORT", "3000")),
                   help="webserver port to reuse or start on (default $WSOVVIS_UI_PORT or 3000)")
    p.add_argument("--davis", type=Path, default=REPO.parent / "shared" / "data" / "davis",
                   help="DAVIS folder with JPEGImages/<sequence>/ (default ../shared/data/davis)")
    p.add_argument("--sequence", default="horsejump-high", help="DAVIS sequence to segment")
    p.add_argument("--frames", type=int, default=6, help="frames in the montage row")
    p.add_argument("--tile-width", type=int, default=240, help="width of each frame, pixels")
    p.add_argument("--out", type=Path, default=SHOTS, help="output folder (docs/screenshots)")
    args = p.parse_args(argv)
    if not (args.graph or args.real_masks):
        args.graph = args.real_masks = True
    return args


# --- asset graph ------------------------------------------------------------------------------


def gql(url: str, query: str, timeout: float = 10) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.load(response)
    if payload.get("errors"):
        raise ScreenshotError(f"GraphQL errors from {url}: {payload['errors']}")
    return payload["data"]


def serves_instance(url: str, home: Path) -> bool | None:
    """True: a webserver of `home` with its code location loaded; False: something else
    answers there (or another instance); None: nothing listens."""
    try:
        data = gql(url, INSTANCE_QUERY, timeout=5)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    except (ScreenshotError, ValueError, KeyError):
        return False
    info = (data.get("instance") or {}).get("info") or ""
    ours = any(f"base_dir: {h}\n" in info for h in (home, home.resolve()))
    entries = (data.get("workspaceOrError") or {}).get("locationEntries") or []
    return ours and bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def services(action: str, env: dict) -> None:
    cmd = ["bash", str(REPO / "scripts" / "services.sh"), action, "webserver"]
    if subprocess.run(cmd, cwd=REPO, env=env).returncode != 0:
        raise ScreenshotError(f"`{' '.join(cmd[1:])}` failed (its log: $DAGSTER_HOME/services/)")


def check_demo_materialised(url: str) -> list[str]:
    """Names of the graph's assets; a ScreenshotError if the demo's are not all materialised."""
    nodes = gql(url, ASSETS_QUERY, timeout=60)["assetNodes"]
    by_name = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    missing = []
    for name in DEMO_ASSETS:
        node = by_name.get(name)
        if node is None:
            missing.append(f"{name} (not in the code location)")
        elif node["isPartitioned"]:
            stats = node["partitionStats"] or {}
            done, total = stats.get("numMaterialized", 0), stats.get("numPartitions", 0)
            if not total or done < total:
                missing.append(f"{name} ({done}/{total} partitions)")
        elif not node["assetMaterializations"]:
            missing.append(f"{name} (never materialised)")
    if missing:
        raise ScreenshotError(
            "the demo's assets are not all materialised in this instance: "
            f"{', '.join(missing)}; run `bash scripts/demo.sh` first (same DAGSTER_HOME)"
        )
    return sorted(by_name)


def shoot_graph(url: str, names: list[str], groups: list[str], dest: Path) -> None:
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ScreenshotError(
            "playwright is not installed: `bash scripts/setup.sh dev,train`"
        ) from exc
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise ScreenshotError("no chromium on PATH: `bash scripts/install_browser.sh`")
    expanded = ",".join(f"global@global:{g}" for g in groups)  # docs/ui.md's "expand all"
    with tempfile.TemporaryDirectory(prefix="wsovvis-chromium-") as profile, \
            sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        # only the one-off "Join the Dagster community" dialog is dismissed; every graph
        # preference (facets, direction, navigation) stays at the UI's default
        context.add_init_script('localStorage.setItem("communityNux", JSON.stringify("1"));')
        context.set_default_timeout(60_000)
        try:
            page = context.new_page()
            page.goto(f"{url}/asset-groups?expanded={expanded}")
            graph = page.locator("svg foreignObject")
            for name in names:
                graph.get_by_text(name, exact=True).first.wait_for(state="visible")
            # Fold the asset list beside the graph (its toggle follows "Jump to…") and re-fit
            # (double-click on the empty canvas): with the room, the fit zoom draws each node
            # with its rows (status, partitions, checks) instead of the bare name.
            page.locator("xpath=//input[@placeholder='Jump to…']/following::button[1]").click()
            page.mouse.dblclick(VIEWPORT["width"] // 2, 140)
            try:  # each demo asset drawn with its status, which arrives after the layout
                page.wait_for_function(DRAWN_WITH_STATUS, arg=list(DEMO_ASSETS), timeout=30_000)
            except PlaywrightTimeout as exc:
                raise ScreenshotError(
                    "the graph did not show every demo asset with its status after fitting it "
                    f"to the {VIEWPORT['width']}x{VIEWPORT['height']} view (zoomed out to bare "
                    "names, or a status other than Materialized / 100% filled)"
                ) from exc
            page.wait_for_timeout(1500)  # the fit is animated
            for name in names:
                if not graph.get_by_text(name, exact=True).first.is_visible():
                    raise ScreenshotError(f"asset {name} is out of view after fitting the graph")
            tmp = dest.with_name(f".{dest.name}.tmp.png")
            page.screenshot(path=str(tmp))
            os.replace(tmp, dest)
        finally:
            context.close()


def graph_step(args: argparse.Namespace) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or REPO / ".dagster_home")
    if not (home / "dagster.yaml").is_file():
        raise ScreenshotError(
            f"{home} is not a Dagster instance folder: run `bash scripts/demo.sh` first"
        )
    env = dict(os.environ, DAGSTER_HOME=str(home))
    port = args.port
    url = f"http://127.0.0.1:{port}"
    started = False
    state = serves_instance(url, home)
    if state is None and port_in_use(port):
        state = False
    if state:
        print(f"[screenshots] reusing the webserver at {url}")
    else:
        if state is False:
            port = free_port()
            print(f"[screenshots] port {args.port} serves something else; using {port}")
            url = f"http://127.0.0.1:{port}"
        env["WSOVVIS_UI_PORT"] = str(port)
        # its own services folder: a daemon or UI the user runs from .dagster_home/services
        # is left alone
        env["WSOVVIS_SERVICES_DIR"] = tempfile.mkdtemp(prefix="wsovvis-shots-services-")
        started = True  # stopped in `finally` even if the start times out
    try:
        if started:
            services("start", env)
        names = check_demo_materialised(url)
        groups = sorted({n["groupName"] for n in gql(url, "{ assetNodes { groupName } }",
                                                      timeout=60)["assetNodes"]})
        dest = args.out / "asset_graph.png"
        shoot_graph(url, names, groups, dest)
    finally:
        if started:
            services("stop", env)
            shutil.rmtree(env["WSOVVIS_SERVICES_DIR"], ignore_errors=True)
    size = dest.stat().st_size
    print(f"[screenshots] {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}: "
          f"{size // 1000} KB")
    if size > MAX_PNG_BYTES:
        print(f"[screenshots] warning: over {MAX_PNG_BYTES // 1000} KB", file=sys.stderr)
    return dest


# --- real masks -------------------------------------------------------------------------------


def real_masks_step(args: argparse.Namespace) -> Path:
    import numpy as np

    from wsovvis_dagster.atomic import atomic_file
    from wsovvis_dagster.masks.png_io import list_mask_files, load_id_map
    from wsovvis_dagster.masks.preview import overlay_montage
    from wsovvis_dagster.masks.segment import segment_video
    from wsovvis_dagster.paths import VideoRef
    from wsovvis_dagster.predictors.factory import build_predictor
    from wsovvis_dagster.predictors.settings import PredictorSettings
    from wsovvis_dagster.video.frames import list_frame_files, read_video

    source = args.davis / "JPEGImages" / args.sequence
    if not source.is_dir():
        source = args.davis / "JPEGImages" / "480p" / args.sequence  # DAVIS-2016 as released
    files = list_frame_files(source) if source.is_dir() else []
    if not files:
        raise ScreenshotError(
            f"no frames in {args.davis}/JPEGImages/{args.sequence}/: point --davis at a DAVIS "
            "folder (../shared/data/davis beside the checkout)"
        )
    ref = VideoRef("val", args.sequence)
    with tempfile.TemporaryDirectory(prefix="wsovvis-real-masks-") as tmp:
        data_root, output_root = Path(tmp) / "data", Path(tmp) / "outputs"
        # the data root refuses links out of itself, so the frames are copied in
        frames_dir = data_root / ref.split / "JPEGImages" / ref.video_id
        frames_dir.mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, frames_dir / f.name)
        predictor = build_predictor(PredictorSettings())  # the demo's: backend "cpu"
        t0 = time.perf_counter()
        result = segment_video(data_root, output_root, ref, predictor)
        seconds = time.perf_counter() - t0
        frames = read_video(data_root, ref)
        id_maps = np.stack([load_id_map(p) for p in list_mask_files(result.folder)])
    print(f"[screenshots] {predictor.name} {predictor.version} on {args.sequence}: "
          f"{result.frames} frames, {result.tracks} tracks, {seconds:.1f} s")
    jpeg = overlay_montage(frames.images, id_maps, count=args.frames,
                           tile_width=args.tile_width)
    dest = args.out / "real_masks.jpg"
    with atomic_file(dest, "wb") as fh:
        fh.write(jpeg)
    print(f"[screenshots] {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}: "
          f"{len(jpeg) // 1000} KB")
    if len(jpeg) > MAX_JPEG_BYTES:
        print(f"[screenshots] warning: over {MAX_JPEG_BYTES // 1000} KB: lower --tile-width",
              file=sys.stderr)
    return dest


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.real_masks:
            real_masks_step(args)
        if args.graph:
            graph_step(args)
    except ScreenshotError as exc:
        print(f"[screenshots] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
