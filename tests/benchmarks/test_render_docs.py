"""docs/benchmarks.md and the generated blocks of README.md and docs/*.md come from
benchmarks/results/*.json and must match them.

`render_docs --check` fails when a JSON changed without regenerating the pages, or a figure was
edited by hand; a `--json` benchmark run writes a file the renderer reads with its own table
renderer; unknown files still appear through the generic renderer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RENDER = "benchmarks.render_docs"
FALLBACK = "shown generically.)*"  # the note a section gets when its own renderer gave up


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    """The modules as CI and users run them, from the repository root (tests do not import
    the benchmarks layer)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def render(results: Path, doc: Path, *flags: str) -> subprocess.CompletedProcess:
    return run(RENDER, *flags, "--results", str(results), "--out", str(doc))


def test_committed_doc_matches_the_results():
    proc = run(RENDER, "--check")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_every_result_file_has_the_one_envelope():
    """CPU benchmarks, GPU benchmarks and `wsovvis quality --json` write through one writer:
    each committed file says what it measured, how it was run and under what conditions."""
    files = sorted((REPO / "benchmarks" / "results").glob("*.json"))
    assert len(files) > 20
    for path in files:
        doc = json.loads(path.read_text())
        assert set(doc) == {"benchmark", "title", "measures", "context", "results"}, path.name
        assert doc["context"]["command"] and doc["context"]["date"], path.name
        assert doc["context"].get("machine") or doc["context"].get("conditions"), path.name


@pytest.fixture
def results_copy(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(REPO / "benchmarks" / "results", results)
    doc = tmp_path / "benchmarks.md"
    assert render(results, doc).returncode == 0
    return results, doc


def test_check_fails_on_an_edited_json(results_copy):
    results, doc = results_copy
    assert render(results, doc, "--check").returncode == 0
    setup = results / "gpu_setup.json"
    data = json.loads(setup.read_text())
    data["results"]["patch"]["files_changed"] = 34
    setup.write_text(json.dumps(data))
    proc = render(results, doc, "--check")
    assert proc.returncode == 1 and "out of date" in proc.stdout
    assert "34 files changed" not in doc.read_text()  # --check writes nothing
    assert render(results, doc).returncode == 0
    assert "34 files changed" in doc.read_text()


def test_check_fails_on_a_hand_edited_doc(results_copy):
    results, doc = results_copy
    doc.write_text(doc.read_text().replace("33 files changed", "30 files changed"))
    assert render(results, doc, "--check").returncode == 1


def test_unknown_and_reshaped_files_still_appear(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "new_thing.json").write_text(json.dumps({
        "title": "A new measurement", "measures": "product path: a Dagster backfill",
        "context": {"command": "python -m benchmarks.new_thing --n 3"},
        "videos": 24, "runs": [{"hold_s": 2, "wall_s": 61.8, "extra": {"cpu": 0.5}},
                               {"hold_s": 5, "wall_s": 110.25}]}))
    # a known name whose layout changed: the generic renderer takes over instead of failing
    (results / "gpu_setup.json").write_text(json.dumps({"total_s": 12.5}))
    doc = tmp_path / "benchmarks.md"
    assert render(results, doc).returncode == 0
    text = doc.read_text()
    new = text[text.index("## new_thing"):]
    assert "- **Command**: `python -m benchmarks.new_thing --n 3`" in new
    assert "- **Measures**: product path: a Dagster backfill" in new
    assert "| `videos` | 24 |" in new
    assert "| hold_s | wall_s | extra.cpu |" in new
    assert "| 5 | 110.2 | - |" in new
    setup = text[text.index("## gpu_setup"):text.index("## new_thing")]
    assert FALLBACK in setup and "| `total_s` | 12.50 |" in setup


@pytest.mark.parametrize("script, args", [
    ("tube_conversion", ["--videos", "1", "--frames", "3", "--height", "48", "--width", "64",
                         "--objects", "2", "--repeat", "1", "--workers", "1"]),
    ("evaluator", ["--videos", "2", "--tubes", "2", "--frames", "3", "--height", "40",
                   "--width", "60", "--repeat", "1"]),
])
def test_a_json_run_renders_with_its_own_tables(tmp_path, script, args):
    out = tmp_path / "results" / f"{script}.json"
    proc = run(f"benchmarks.{script}", *args, "--note", "tiny", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    ctx = data["context"]
    assert ctx["command"].startswith(f"python -m benchmarks.{script} --videos")
    assert "--note" not in ctx["command"] and ctx["note"] == "tiny"
    assert ctx["machine"]["cores"] >= 1 and ctx["versions"]["numpy"]
    assert ctx["sizes"]["videos"] == int(args[1])
    assert data["measures"].startswith("library")
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, no temp file left
    doc = tmp_path / "benchmarks.md"
    assert render(out.parent, doc).returncode == 0
    section = doc.read_text().split(f"## {script}: ", 1)[1]
    assert FALLBACK not in section
    assert f"- **Command**: `{ctx['command']}`" in section
    if script == "tube_conversion":
        for r in data["results"]["methods"]:
            assert f"| `{r['method']}` | " in section and f" | {r['vs_naive']:.1f}× |" in section
    else:
        for s in data["results"]["steps"]:
            assert f"| {s['step']} | " in section
        ref = next(s for s in data["results"]["steps"] if "vs_ours" in s)
        assert f"| {ref['vs_ours']:.1f}× slower |" in section


def _quality_json(version: str, j: float) -> dict:
    """A `wsovvis quality --json` file's shape, with made-up figures."""
    seqs = {name: {"J": j, "J_best": j - 0.125, "tracks": 1, "frames": 10, "seconds": 1.0}
            for name in ("bear", "bus", "car-turn")}
    return {"benchmark": "predictor_quality", "title": f"Quality ({version})",
            "measures": "product path: `wsovvis quality`",
            "context": {"command": "wsovvis quality --davis=D", "date": "2026-12-04 20:00 UTC"},
            "results": {"predictor": {"name": "cpu", "version": version},
                        "davis": {"sequences": seqs,
                                  "mean": {"frames": 30, "frames_per_s": 10.0, "J": j,
                                           "J_best": j - 0.125, "tracks": 1.0}},
                        "synthetic": {"train": {"st_iou": 0.8125, "tracks_per_object": 1.25,
                                                "AP": 0.75, "AP50": 0.9, "videos": 24,
                                                "objects": 72}}}}


def test_predictor_doc_block_comes_from_the_predictor_jsons(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "predictor_davis_train.json").write_text(json.dumps(_quality_json("cpu-9",
                                                                                 0.625)))
    page = tmp_path / "predictor.md"
    page.write_text("# hand-written\n\nintro\n\n<!-- generated: predictor -->\nstale\n"
                    "<!-- /generated -->\n\nmore hand-written text\n")
    doc = tmp_path / "benchmarks.md"
    assert render(results, doc, "--pages", str(page)).returncode == 0
    text = page.read_text()
    assert text.startswith("# hand-written\n\nintro\n") and "more hand-written text" in text
    assert "stale" not in text
    assert "| cpu-9 | DAVIS, 3 sequences | 30 | 0.625 | 0.500 | 1.00 |" in text
    assert "| cpu-9 | synthetic train, 24 videos |" in text and "| 0.812 |" in text
    assert "| bus | 10 | 0.625 | 0.500 | 1 |" in text  # the per-sequence table
    assert "`wsovvis quality --davis=D`" in text
    assert render(results, doc, "--pages", str(page), "--check").returncode == 0
    (results / "predictor_davis_train.json").write_text(json.dumps(_quality_json("cpu-9", 0.5)))
    proc = render(results, doc, "--pages", str(page), "--check")
    assert proc.returncode == 1 and "predictor.md is out of date" in proc.stdout
    # docs/benchmarks.md renders the same file with its own tables, not generically
    section = doc.read_text().split("## predictor_davis_train: ", 1)[1]
    assert FALLBACK not in section and "| bear | 10 |" in section


def test_readme_figures_come_from_the_results(results_copy, tmp_path):
    """The README's headline figures (the held-out J, the dead-run time, ...) are rendered
    from their result files: a changed JSON or a figure typed over fails --check."""
    results, doc = results_copy
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    assert render(results, doc, "--pages", str(readme), "--check").returncode == 0
    val = results / "predictor_davis_val.json"
    data = json.loads(val.read_text())
    data["results"]["davis"]["mean"]["J"] = 0.4375
    val.write_text(json.dumps(data))
    proc = render(results, doc, "--pages", str(readme), "--check")
    assert proc.returncode == 1 and "README.md is out of date" in proc.stdout
    assert render(results, doc, "--pages", str(readme)).returncode == 0
    assert "mean J **0.438**" in readme.read_text()
    # a figure typed over inside the block is put back
    dead = json.loads((results / "orchestration_dead_runs.json").read_text())
    seconds = dead["results"]["dead_runs"]["kill_to_failed_and_freed_s"]
    shown = f"{min(seconds):.0f}–{max(seconds):.0f} s"
    assert shown in readme.read_text()
    readme.write_text(readme.read_text().replace(shown, "1–2 s"))
    assert render(results, doc, "--pages", str(readme), "--check").returncode == 1


def test_a_figure_inside_a_sentence_and_an_unknown_block(results_copy, tmp_path):
    results, doc = results_copy
    page = tmp_path / "page.md"
    page.write_text("A killed run is failed within <!-- generated: dead_run_range -->?"
                    "<!-- /generated --> here.\n")
    assert render(results, doc, "--pages", str(page)).returncode == 0
    text = page.read_text()
    assert text.startswith("A killed run is failed within <!-- generated: dead_run_range -->")
    assert "?" not in text and " s<!-- /generated --> here.\n" in text
    page.write_text("<!-- generated: no_such_block -->x<!-- /generated -->\n")
    proc = render(results, doc, "--pages", str(page), "--check")
    assert proc.returncode != 0 and "unknown generated block 'no_such_block'" in proc.stderr


def test_combining_device_calls_labels_rows_by_the_defaults_they_ran_under(tmp_path):
    """The README's GPU row reads the `defaults` rows of the combined product-path file: a row
    measured while cuDNN autotuning was the default must not count as today's defaults, and
    one measured with today's default set by hand must; a later agreement file replaces the
    comparison it repeats and keeps the others."""
    res = REPO / "benchmarks" / "results"
    then = res / "gpu_product_path_attn_resize.json"  # autotuning on by default then
    choice = res / "gpu_product_path_cudnn_choice.json"  # one row with it off by hand
    agreement = res / "gpu_agreement_no_autotune.json"
    out = tmp_path / "combined.json"
    proc = run("benchmarks.gpu_product_path", "--combine", str(out), str(then), str(choice),
               str(agreement))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]["scenarios"]
    by = {(r["source"], r["name"], r["warm"], json.dumps(r["settings"])): r for r in rows}
    autotune = json.dumps({"WSOVVIS_CUDNN_BENCHMARK": "1"})
    assert (then.name, "long", True, autotune) in by
    assert not any(r["settings"] == "defaults" for r in rows if r["source"] == then.name)
    assert (choice.name, "mixed", True, json.dumps("defaults")) in by
    assert (choice.name, "mixed", True, autotune) in by
    agreed = json.loads(out.read_text())["results"]["agreement"]
    new = json.loads(agreement.read_text())["results"]["defaults_vs_today_fp32"]
    assert agreed["defaults_vs_today_fp32"] == new
    assert "patch_v2_vs_v1_fp32" in agreed  # from the earlier call's file
