"""The demo's promise, end to end (slow: ~8 minutes on 2 cores; `make test-all` or `pytest -m slow`)."""

import pytest

from ponder.demo import run_demo


@pytest.mark.slow
def test_demo_reaches_its_target(tmp_path):
    res = run_demo(tmp_path / "demo")
    n_sup = res["n_supervision"]
    assert res["n"] >= 1000
    assert res["exact"][n_sup - 1] >= 0.80  # held-out exact accuracy at full depth
    assert res["exact"][n_sup - 1] >= res["exact"][0] + 0.2  # clearly above one supervision step
    for name in ("scaling.png", "solving_0.png", "results.json"):
        assert (tmp_path / "demo" / "eval" / name).exists()
