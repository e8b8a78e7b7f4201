"""Runs the tasks of main.py on a local weft (the `weft_dev` fixture)."""

from render import Render


def test_sum_squares(weft_dev):
    assert Render().workflows.run_task("sum_squares", [[1, 2, 3]]).results == [14]
