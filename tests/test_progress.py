"""Progress off a terminal: plain lines with the ETA, at most every `every` seconds and at the end, none for work
shorter than `delay`; every item passes through unchanged."""

from ponder.progress import progress


def test_plain_lines_with_eta_off_a_terminal(capsys):
    items = list(progress(iter(range(4)), 4, "evaluating", delay=0.0, every=0.0))
    assert items == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" in ")[0] for line in lines] == [f"evaluating: {i}/4" for i in range(1, 5)]
    assert all(", ETA " in line for line in lines) and lines[-1].endswith("ETA 00:00")


def test_quick_work_prints_nothing(capsys):
    assert list(progress(range(3), 3, "evaluating")) == [0, 1, 2]  # under the 5 s delay
    assert list(progress(range(5), 5, "x", enabled=False, delay=0.0, every=0.0)) == list(range(5))
    assert capsys.readouterr().err == ""


def test_only_the_last_line_when_every_is_long(capsys):
    list(progress(range(6), 6, "sweep", delay=0.0, every=3600.0))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: 6/6 in ")
