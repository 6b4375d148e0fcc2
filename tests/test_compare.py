"""`ponder compare`: same data and budget for every member, one table/plot, resumable without retraining."""

import json

import pytest

from ponder import UserError
from ponder.cli import main
from ponder.compare import compare, format_compare, parse_member
from test_train import TINY


def test_parse_member():
    m = parse_member("deep=demo,model.n_latent=4,train.lr=1e-3")
    assert (m.name, m.preset, m.overrides) == ("deep", "demo", ("model.n_latent=4", "train.lr=1e-3"))
    for bad in ("demo", "=demo", "a=", "a/b=demo", "a=b=c"):
        with pytest.raises(UserError, match="NAME=PRESET"):
            parse_member(bad)


def test_compare_trains_evaluates_and_resumes(tmp_path, capsys):
    members = [parse_member("shallow=demo,model.n_latent=1"), parse_member("deep=demo,model.n_latent=3")]
    out = tmp_path / "cmp"
    report = compare(members, out, TINY, steps=4, eval_steps=3)
    rows = {r["name"]: r for r in report["members"]}
    assert set(rows) == {"shallow", "deep"} and all(r["steps"] == 4 for r in rows.values())
    assert all(len(r["result"]["exact"]) == 3 for r in rows.values())  # the same test-time steps for all
    assert rows["shallow"]["weights"] == rows["deep"]["weights"]  # n changes the depth, not the weights
    # one dataset for both, built once
    cfgs = [json.loads((out / n / "compare-eval" / "results.json").read_text())["data"] for n in rows]
    assert cfgs[0] == cfgs[1] == str(out / "data")
    for f in ("compare.json", "compare.txt", "compare.png"):
        assert (out / f).stat().st_size > 100
    table = format_compare(report)
    assert "shallow" in table and "deep" in table
    # resumable: a finished member is neither retrained nor re-evaluated
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "compare." not in p.name}
    again = compare(members, out, TINY, steps=4, eval_steps=3)
    assert [r["result"]["exact"] for r in again["members"]] == [r["result"]["exact"] for r in report["members"]]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    # a member changed under the same name is refused rather than silently reused
    with pytest.raises(UserError, match="another config"):
        compare([parse_member("shallow=demo,model.n_latent=2")], out, TINY, steps=4, eval_steps=3)


def test_compare_refuses_mixed_data_and_bad_budgets(tmp_path, capsys):
    members = [parse_member("a=demo"), parse_member("b=demo,data.sudoku.size=6")]
    with pytest.raises(UserError, match="other data settings"):
        compare(members, tmp_path / "x", TINY, steps=2)
    with pytest.raises(UserError, match="one budget"):
        compare(members[:1], tmp_path / "x", TINY)
    assert main(["compare", "--out", str(tmp_path / "y"), "--steps", "2", "oops"]) == 2
    assert "NAME=PRESET" in capsys.readouterr().err
