"""`make bench`'s report (scripts/bench_report.py) runs end to end in its quick form.

Timings are not asserted (they belong to the bench); what is asserted is the table's
shape, that diffusers' network has our size wherever it was measured, that a missing
diffusers or deepinv is said, not fatal, and that --quick never touches the README.
"""

import hashlib
import importlib.util
import sys

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def bench_report(root):
    path = root / "scripts" / "bench_report.py"
    spec = importlib.util.spec_from_file_location("bench_report", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(bench_report, root, tmp_path_factory):
    readme = root / "README.md"
    before = hashlib.sha256(readme.read_bytes()).hexdigest()
    out = tmp_path_factory.mktemp("bench")
    assert bench_report.main(["--quick", "--out-dir", str(out)]) == 0
    after = hashlib.sha256(readme.read_bytes()).hexdigest()
    return out, before, after


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_quick_report_writes_the_table_and_leaves_the_readme(bench_report, quick_run):
    out, before, after = quick_run
    assert before == after
    frame = pd.read_csv(out / "performance.csv")
    assert list(frame.columns) == bench_report.COLUMNS
    comparisons = set(frame["comparison"])
    assert {
        "DDPM training vs diffusers",
        "DDPM sampling vs diffusers",
        "DIP iteration vs deepinv",
        "DIP overhead share",
        "DIP fitting vs convolution bound",
    } <= comparisons
    assert (frame["threads"] == 1).all()
    assert frame["torch"].notna().all() and frame["load_average_start"].notna().all()
    overhead = frame[frame["comparison"] == "DIP overhead share"]
    assert ((overhead["ours"] > -1) & (overhead["ours"] < 1)).all()
    assert set(overhead["met"]) <= {"yes", "no"}
    markdown = (out / "performance.md").read_text()
    assert markdown.count("\n| ") == len(frame) + 2  # header, rule, one line per row
    assert "QUICK SMOKE RUN" in markdown
    for name in ("bench_ddpm.csv", "bench_dip.csv", "dip_deepinv.csv"):
        assert (out / name).is_file()


def test_quick_report_compares_networks_of_the_same_size(quick_run):
    out, _, _ = quick_run
    frame = pd.read_csv(out / "performance.csv")
    ddpm = frame[frame["comparison"].str.startswith("DDPM")]
    assert len(ddpm) == 2  # tiny: training and sampling
    text = (out / "performance.md").read_text()
    if not _importable("diffusers"):
        assert ddpm["reference_value"].isna().all()
        assert "not installed" in text
        return
    assert (ddpm["params_ours"] == ddpm["params_reference"]).all()
    assert (ddpm["gflops_ours"] == ddpm["gflops_reference"]).all()
    assert (ddpm["same_size"] == "yes").all()
    assert (ddpm["ratio"] > 0).all()


def test_quick_report_times_deepinv_or_says_it_is_missing(quick_run):
    out, _, _ = quick_run
    frame = pd.read_csv(out / "performance.csv")
    rows = frame[frame["comparison"].str.contains("deepinv")]
    text = (out / "performance.md").read_text()
    if not _importable("deepinv"):
        assert rows["reference_value"].isna().all()
        assert "not installed" in text
        return
    assert (rows["params_ours"] == rows["params_reference"]).all()
    assert (rows["reference_value"] > 0).all() and (rows["ours"] > 0).all()
    assert "ours vs deepinv" in text  # what differs between the two is stated


def test_missing_reference_libraries_are_reported_not_fatal(bench_report):
    ours = {
        "device": "cpu",
        "preset": "tiny",
        "impl": "ours",
        "variant": "fp32",
        "batch": 2,
        "params": 10,
        "flops_per_eval": 100,
        "train_img_per_s": 1.0,
        "sample_img_per_s": 2.0,
        "sample_steps": 1,
    }
    rows = bench_report.diffusers_summary(pd.DataFrame([ours]), ("tiny",))
    rows += bench_report.deepinv_summary(
        [{"size": 16, "layers": 2, "channels": 8}], "not installed"
    )
    info = bench_report.run_info(1)
    frame = bench_report.summary_frame(rows, info)
    assert list(frame.columns) == bench_report.COLUMNS
    assert (frame["met"] == "n/a").all()
    assert frame["reference_value"].isna().all()
    assert "not installed" in bench_report.to_markdown(frame, info, [])


def test_readme_block_is_rewritten_between_the_markers_only(bench_report, root, tmp_path):
    text = (root / "README.md").read_text()
    assert text.count(bench_report.START) == 1 and text.count(bench_report.END) == 1
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{bench_report.START}\nold\n{bench_report.END}\nafter\n")
    bench_report.rewrite_readme(readme, "new table\n")
    expected = f"before\n{bench_report.START}\nnew table\n{bench_report.END}\nafter\n"
    assert readme.read_text() == expected
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit):
        bench_report.rewrite_readme(readme, "x\n")


def test_quick_needs_an_output_folder(bench_report):
    with pytest.raises(SystemExit):
        bench_report.main(["--quick"])
