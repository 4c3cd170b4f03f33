"""alwb: an active-learning labeling workbench for images.

The library never imports Streamlit; ``ui/`` is a thin shell over :class:`alwb.project.Project`. Data flows one way,
and the packages read top to bottom in that order::

    alwb/project.py   the front door: Project (create, open, add images, submit answers, train, query, status);
                      reads.py is what pages read, history.py one person's labels
    alwb/intake/      ingest: folders, manifests and uploads in; images read and checked; where images live
    alwb/store/       the store (SQLite or PostgreSQL): items, labels, drafts, rounds, accounts, leases, queue
    alwb/learning/    plan (how rounds train) → backbones, models, embed → trainers, round → query strategies,
                      pseudo-labels, balancing, evaluation, advice (when to stop)
    alwb/team/        accounts, leases, agreement between annotators, training workers
    alwb/io/          answers files, exports (dataset, model, ONNX), Label Studio, predictions, text reports
    alwb/insight/     seeing the dataset: label errors, near-duplicates, outliers, the map

``cli.py`` (the ``alwb`` command), ``jobs.py`` (background rounds), ``progress.py`` (how far a round has come,
wherever it runs: one channel through the store), ``simulate.py`` (the simulator), ``config.py``,
``errors.py`` and ``redaction.py`` sit at the top; ``experimental/`` holds what research measured as no gain.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import AlwbError  # noqa: E402

__all__ = ["AlwbError", "__version__"]
