"""Research options: measured, kept for the experiments that compare against them, not used by the product.

Nothing in :mod:`alwb` outside this package imports it, and no product setting, CLI option or workbench page reaches
it: the research scripts under ``bench/research/`` do (their results are in ``docs/results.md``, each experiment and
what was declared before it ran in ``docs/experiments.md``).

Promoting an option into the product takes three things:

1. an experiment declared in ``docs/experiments.md`` before it runs (the setting, the baseline, the rule for a gain)
   whose paired result over at least three seeds clears the noise at the product's defaults;
2. its time cost stated beside the gain and within the round's budget;
3. a test of its behaviour, and the option moved into the product module it belongs to (with its setting in
   :class:`alwb.config.TrainConfig` and the CLI/UI), leaving this package.

Here now:

- :mod:`alwb.experimental.semi`: a FixMatch-style consistency loss on unlabeled pool images, and distillation from
  a teacher model (experiments E12 – E14 and E21 in ``docs/experiments.md``).
- :func:`alwb.experimental.semi.flat_counts`: one pseudo-label cap for every labeled class (E15).
"""
