"""One run directory story: `ponder eval RUN` writes RUN/eval (earlier evaluations kept by step) and TensorBoard,
and `ponder report` writes one self-contained page for a run and for a compare, checked in a real browser when
one is installed."""

import base64
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from ponder.cli import main
from helpers import TINY


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 6-step run with two checkpoints (steps 3 and 6) and its dataset built into the run."""
    tmp = tmp_path_factory.mktemp("report")
    run_dir = tmp / "run"
    code = main(["train", "demo", *TINY, "train.steps=6", "train.checkpoint_every=3", "--out", str(run_dir)])
    assert code == 0
    return run_dir


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, \
        acc.Tags()["images"]


def assert_self_contained(page: str) -> None:
    """No fetched resource: every image inline, no script, no external stylesheet or font."""
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for s in sources:  # each one a real PNG
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_writes_the_report_and_machine(trained):
    page = (trained / "report.html").read_text()
    assert_self_contained(page)
    assert "Training curves" in page and "Timings and machine" in page
    assert "hidden: 32" in page  # the config, as written in config.yaml
    starts = [json.loads(line) for line in (trained / "machine.jsonl").read_text().splitlines()]
    assert len(starts) == 1 and starts[0]["step"] == 0 and starts[0]["cores"] == os.cpu_count()


def test_eval_writes_run_eval_keeps_earlier_ones_and_reports(trained, capsys):
    code, out, err = run(capsys, "eval", str(trained), "--pictures", "1")
    assert code == 0, err
    ev = trained / "eval"
    first = json.loads((ev / "results.json").read_text())
    assert first["checkpoint"].endswith("step_00000006") and (ev / "solving_0.png").exists()
    assert f"report: {trained / 'report.html'}" in out
    page = (trained / "report.html").read_text()
    assert_self_contained(page)
    assert "test-time scaling on 16 held-out examples" in page and "solving_0" in page
    tags, images = scalars(trained)
    assert tags["test/exact"] == [(6, pytest.approx(first["exact"][3]))]  # at the checkpoint's step, at N_sup
    assert "test/adaptive_mean_steps" in tags and "test/valid" in tags and "test/scaling" in images

    # the same evaluation again: written in place, nothing kept aside
    assert run(capsys, "eval", str(trained), "--pictures", "1")[0] == 0
    assert not list(ev.glob("step_*"))
    # other settings: the earlier evaluation moves, whole, to eval/step_<its step>/
    before = (ev / "results.json").read_bytes()
    code, _, err = run(capsys, "eval", str(trained), "--pictures", "0", "model.n_latent=1")
    assert code == 0 and "kept the earlier evaluation in" in err
    kept = ev / "step_00000006"
    assert (kept / "results.json").read_bytes() == before and (kept / "solving_0.png").exists()
    assert json.loads((ev / "results.json").read_text())["overrides"] == ["model.n_latent=1"]
    assert not (ev / "solving_0.png").exists()  # the newest evaluation drew none
    # an earlier checkpoint: the newest moves aside again, under a free name when its step is taken
    code, _, err = run(capsys, "eval", str(trained / "ckpt" / "step_00000003"), "--pictures", "0")
    assert code == 0, err
    assert json.loads((ev / "results.json").read_text())["checkpoint"].endswith("step_00000003")
    assert json.loads((ev / "step_00000006-2" / "results.json").read_text())["overrides"] == ["model.n_latent=1"]
    assert (kept / "results.json").read_bytes() == before  # never overwritten
    tags, _ = scalars(trained)
    assert [s for s, _ in tags["test/exact"]] == [6, 6, 3] and "test[model.n_latent=1]/exact" in tags
    assert "earlier evaluations kept in eval/: step_00000006, step_00000006-2" in (trained / "report.html").read_text()


def test_report_command_and_bad_input(trained, tmp_path, capsys):
    (trained / "report.html").unlink()
    code, out, _ = run(capsys, "report", str(trained))
    assert code == 0 and (trained / "report.html").exists() and "wrote" in out
    for where, needle in ((tmp_path / "none", "no such run"), (tmp_path, "not a run")):
        code, _, err = run(capsys, "report", str(where))
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    code = main(["compare", "--out", str(out), "--steps", "4", "--eval-steps", "3", *[f"--set={o}" for o in TINY],
                 "a=demo,model.n_latent=1", "b=demo"])
    assert code == 0
    return out


def test_compare_report_links_members(compared):
    page = (compared / "report.html").read_text()
    assert_self_contained(page)
    assert 'href="./a/report.html"' in page and 'href="./b/report.html"' in page and "Training curves" in page
    member = (compared / "a" / "report.html").read_text()
    assert "Evaluation (compare)" in member  # a member's page shows the compare's evaluation of it


def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    return chromium, sync_playwright


@pytest.mark.parametrize("kind, headings", [("run", ["Summary", "Training curves", "Evaluation"]),
                                            ("compare", ["Table", "Plots", "Training curves", "Members"])])
def test_report_in_a_real_browser(request, tmp_path, capsys, kind, headings):
    """The page loads in headless Chromium with no console error and no request leaving the file, and every figure
    decodes and is drawn."""
    chromium, sync_playwright = browser()
    if kind == "run":
        directory = request.getfixturevalue("trained")
        assert run(capsys, "eval", str(directory), "--pictures", "1")[0] == 0
    else:
        directory = request.getfixturevalue("compared")
    errors = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = b.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: errors.append(f"fetched {r.url}") if not r.url.startswith(("file:", "data:"))
                else None)
        page.goto((directory / "report.html").as_uri())
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.width])")
        found = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        b.close()
    assert not errors, errors
    assert len(sizes) >= 2 and all(done and natural > 100 and shown > 100 for done, natural, shown in sizes), sizes
    assert found[:len(headings)] == headings
    assert (tmp_path / "report.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------------------------------
# what a run's files hold is data, never markup or a path

INJECT = '"><b id=pwned>x</b><script>window.pwned=1</script><a href="javascript:alert(1)">'


def _inject(value):
    """Every string inside a JSON or YAML body replaced by markup (the structure and the numbers kept)."""
    if isinstance(value, str):
        return INJECT
    if isinstance(value, list):
        return [_inject(v) for v in value]
    if isinstance(value, dict):
        return {k: _inject(v) for k, v in value.items()}
    return value


def _inject_file(path: Path) -> None:
    import yaml

    if path.suffix == ".json":
        path.write_text(json.dumps(_inject(json.loads(path.read_text()))))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(_inject(json.loads(line))) + "\n" for line in path.read_text().splitlines()))
    elif path.suffix == ".yaml":
        path.write_text(yaml.safe_dump(_inject(yaml.safe_load(path.read_text()))))
    else:
        path.write_text(INJECT)


def _no_markup(page: str) -> None:
    assert "<b id=pwned>" not in page and "<script" not in page and 'href="javascript' not in page
    assert html_escaped(INJECT) in page  # shown, as text


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def _check_in_browser(page_path: Path) -> None:
    """Where Chromium is installed: the page runs nothing of what was injected."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return
    if chromium is None:
        return
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(page_path.as_uri())
        pwned = page.evaluate("() => [document.getElementById('pwned') !== null, window.pwned === 1, "
                              "document.querySelectorAll('a[href^=\"javascript\"]').length]")
        b.close()
    assert pwned == [False, False, 0] and not dialogs


def test_a_runs_files_reach_the_page_as_text(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    assert run(capsys, "eval", str(run_dir), "--pictures", "0", "--show", "1")[0] == 0
    ckpt = sorted((run_dir / "ckpt").iterdir())[-1]
    for path in [run_dir / "eval" / n for n in ("results.json", "evaluated.json", "examples.txt")] + [
            ckpt / "meta.json", run_dir / "machine.jsonl", run_dir / "config.yaml"]:
        _inject_file(path)
    code, _, err = run(capsys, "report", str(run_dir))
    assert code == 0, err
    page = (run_dir / "report.html").read_text()
    _no_markup(page)
    _check_in_browser(run_dir / "report.html")


def test_a_compares_files_reach_the_page_as_text_and_members_stay_inside(compared, tmp_path, capsys):
    d = tmp_path / "cmp"
    shutil.copytree(compared, d)
    body = json.loads((d / "compare.json").read_text())
    for m in body["members"]:
        m["preset"], m["overrides"] = INJECT, [INJECT]
    (d / "compare.json").write_text(json.dumps(body))
    _inject_file(d / "compare.txt")
    code, _, err = run(capsys, "report", str(d))
    assert code == 0, err
    page = (d / "report.html").read_text()
    _no_markup(page)
    assert 'href="./a/report.html"' in page
    _check_in_browser(d / "report.html")
    for name in ("javascript:alert(1)", "../outside", "/tmp/x", ".hidden"):
        bad = json.loads((d / "compare.json").read_text())
        bad["members"][0]["name"] = name
        (d / "compare.json").write_text(json.dumps(bad))
        code, _, err = run(capsys, "report", str(d))
        assert code == 2 and "is not a plain folder name" in err and len(err.strip().splitlines()) == 1, name
    assert not (tmp_path / "outside").exists()


def test_odd_types_in_a_runs_files_are_one_line_or_dropped(trained, tmp_path, capsys):
    """A string where a number goes in metrics.jsonl is dropped (the curve has a gap); a YAML list as config.yaml is
    shown as text; a string where meta.json or results.json holds a number is one line naming the file."""
    base = tmp_path / "base"
    shutil.copytree(trained, base)
    assert run(capsys, "eval", str(base), "--pictures", "0")[0] == 0
    ckpt_name = sorted((base / "ckpt").iterdir())[-1].name

    def edit(name: str, change) -> tuple[int, str]:
        run_dir = tmp_path / name.replace("/", "_")
        shutil.copytree(base, run_dir)
        change(run_dir)
        code, _, err = run(capsys, "report", str(run_dir))
        return code, err

    def metrics(r):
        lines = (r / "metrics.jsonl").read_text().splitlines()
        (r / "metrics.jsonl").write_text("".join(json.dumps({**json.loads(x), "loss": "high"}) + "\n" for x in lines))

    def meta(r):
        p = r / "ckpt" / ckpt_name / "meta.json"
        p.write_text(json.dumps({**json.loads(p.read_text()), "params": "many"}))

    def results(r):
        p = r / "eval" / "results.json"
        p.write_text(json.dumps({**json.loads(p.read_text()), "exact": ["x"]}))

    assert edit("metrics", metrics)[0] == 0
    assert edit("config", lambda r: (r / "config.yaml").write_text("- a\n- b\n"))[0] == 0
    for name, change, needle in (("meta", meta, "meta.json: params should be int"),
                                 ("results", results, "results.json: exact should be a list of numbers")):
        code, err = edit(name, change)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
