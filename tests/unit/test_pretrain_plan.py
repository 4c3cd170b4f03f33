"""A time budget's step count (alwb.learning.pretrain.plan_steps): the pace leaves the first steps out and fills what
is left
of the budget, so `--minutes 45` trains about 45 minutes, not 35 (docs/experiments.md E31)."""

from __future__ import annotations

from alwb.learning.pretrain import plan_steps


def test_the_plan_fills_what_is_left_of_the_budget_at_the_measured_pace() -> None:
    # 20 steps in 10 s, of which the 15 after the first five took 4.5 s (0.3 s a step): 890 s left -> 2,966 more
    assert plan_steps(15, 10.0, 20, 4.5, 15) == 20 + 2966
    # the slow first steps do not count: at the whole average (0.5 s a step) the plan would be 1,780 steps more
    assert plan_steps(15, 10.0, 20, 4.5, 15) > 20 + int(890 / 0.5)


def test_a_later_plan_keeps_the_steps_done_and_a_spent_budget_ends_at_the_next_step() -> None:
    assert plan_steps(1, 60.0, 200, 39.0, 195) == 201  # budget spent: one more step and the job ends
    assert plan_steps(0.5, 60.0, 200, 39.0, 195) == 201
    assert plan_steps(10, 60.0, 200, 40.0, 200) == 200 + int(540 / 0.2)
