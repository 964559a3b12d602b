"""README command 1's driver: the demo runs end to end into a fresh instance and data root."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end(tmp_path, subprocess_env):
    data, out = tmp_path / "data", tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "scripts.run_demo", "--data-root", str(data), "--output-root",
         str(out), "--videos-per-split", "2", "--frames", "6"],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "[demo] done" in r.stdout and "dagster dev" in r.stdout
    assert "trained_model on val: val.model.AP" in r.stdout  # the demo trains by default
    for split in ("train", "val"):
        tubes = json.loads((out / split / f"tubes_{split}.json").read_text())
        assert len(tubes["videos"]) == 2 and tubes["annotations"], split
        assert (data / "annotations" / f"{split}_instances.json").exists()


def test_cli_help_explains_itself():
    r = subprocess.run([sys.executable, "-m", "wsovvis_dagster.cli", "--help"],
                       capture_output=True, text=True, check=True)
    for command in ("generate-demo", "ingest", "import-masks", "quality", "eval", "doctor"):
        assert command in r.stdout
        sub = subprocess.run([sys.executable, "-m", "wsovvis_dagster.cli", command, "--help"],
                             capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: wsovvis " + command in sub.stdout, sub.stderr
    r = subprocess.run([sys.executable, "-m", "scripts.run_demo", "--help"], cwd=REPO,
                       capture_output=True, text=True, check=True)
    assert "--data-root" in r.stdout and "video_partitions" in r.stdout
