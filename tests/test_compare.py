"""`ponder compare`: same data and budget for every member, one table/plot, resumable without retraining."""

import json

import pytest

from ponder import UserError
from ponder.cli import main
from ponder.compare import compare, format_compare, parse_member
from helpers import TINY


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


def test_a_larger_budget_extends_finished_members_without_retraining(tmp_path):
    """More --steps resumes each finished member from its checkpoint (same weights as training straight through);
    the same or a smaller budget reads it back; a member's share scales its budget."""
    from ponder.checkpoint import find, load_weights
    from ponder.compare import Member

    out = tmp_path / "cmp"
    members = [Member("a", "demo", ()), Member("half", "demo", (), share=0.5)]
    first = compare(members, out, TINY, steps=4, eval_steps=2)
    assert [r["steps"] for r in first["members"]] == [4, 2]
    stamp = (out / "a" / "finished.json").stat().st_mtime_ns
    compare(members, out, TINY, steps=3, eval_steps=2)  # smaller: read back, nothing trained
    assert (out / "a" / "finished.json").stat().st_mtime_ns == stamp
    longer = compare(members, out, TINY, steps=8, eval_steps=2)
    assert [r["steps"] for r in longer["members"]] == [8, 4]
    straight = compare([Member("a", "demo", ())], tmp_path / "straight", TINY, steps=8, eval_steps=2)
    assert straight["members"][0]["result"]["exact"] == longer["members"][0]["result"]["exact"]
    a, b = load_weights(find(out / "a")), load_weights(find(tmp_path / "straight" / "a"))
    assert all((a[k] == b[k]).all() for k in a)
    with pytest.raises(UserError, match="--steps budget"):
        compare(members, out, TINY, minutes=1, eval_steps=2)
