"""Agreement: Fleiss' kappa against a published worked example, Cohen's kappa per pair from the store (both
backends), the review queue and reviewers' decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from store_checks import label_history

from alwb.errors import AlwbError
from alwb.store import LabelRow, Store
from alwb.team import agreement, users

#: The worked example of Fleiss' kappa on Wikipedia ("Fleiss' kappa", Worked example): 10 subjects, 14 raters
#: each, 5 categories; P_bar = 0.378, P_e = 0.213, kappa = 0.210.
WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_matches_the_worked_example() -> None:
    assert agreement.fleiss_kappa(WIKIPEDIA) == pytest.approx(0.2099, abs=1e-4)
    assert round(agreement.fleiss_kappa(WIKIPEDIA), 3) == 0.210


def test_fleiss_kappa_edges() -> None:
    assert agreement.fleiss_kappa([[2, 0], [0, 2], [2, 0]]) == pytest.approx(1.0)
    # two raters who always disagree on two equally used categories: kappa -1
    assert agreement.fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    assert np.isnan(agreement.fleiss_kappa([[2, 0], [2, 0]]))  # one category only: undefined
    for bad in ([[1, 1], [2, 1]], [[1, 0]], [], [[-1, 3]]):
        with pytest.raises(ValueError):
            agreement.fleiss_kappa(bad)


@pytest.fixture
def store(store_location: str | Path) -> Store:
    s = Store(store_location, create=True)
    s.add_classes(["x", "y", "z"])
    for i in range(12):
        s.record_item(f"/i/{i}.png", f"{i:064x}", 1, width=8, height=8, mode="L", format="PNG", grey=True)
    yield s
    s.close()


def _answer(store: Store, who: str, pairs: list[tuple[int, str | None]]) -> None:
    store.add_labels([LabelRow(i, c) for i, c in pairs], annotator=who)


def test_pairwise_kappa_and_overall(store: Store) -> None:
    ids = store.item_ids()
    # ann and bob on items 0-3: x x y y / x y y y -> p_o 0.75, p_e 0.5, kappa 0.5
    _answer(store, "ann", list(zip(ids[:4], ["x", "x", "y", "y"], strict=True)))
    _answer(store, "bob", list(zip(ids[:4], ["x", "y", "y", "y"], strict=True)))
    # cid and ann on items 4-6 (cid also answers "none of these")
    _answer(store, "ann", list(zip(ids[4:7], ["z", "x", "y"], strict=True)))
    _answer(store, "cid", list(zip(ids[4:7], ["z", None, "y"], strict=True)))
    _answer(store, "cid", [(ids[8], "x")])  # answered by one person only: no agreement figure
    pairs = {(p.a, p.b): p for p in agreement.pairwise_kappa(store)}
    assert set(pairs) == {("ann", "bob"), ("ann", "cid")}
    ab = pairs["ann", "bob"]
    assert (ab.n_items, ab.agreement) == (4, 0.75) and ab.kappa == pytest.approx(0.5)
    from sklearn.metrics import cohen_kappa_score

    ac = pairs["ann", "cid"]
    assert ac.n_items == 3
    assert ac.kappa == pytest.approx(cohen_kappa_score(["z", "x", "y"], ["z", "<none>", "y"]))
    overall = agreement.overall_agreement(store)
    assert (overall.n_items, overall.raters_per_item, overall.n_annotators) == (7, 2, 3)
    # categories sorted: <none>, x, y, z; counted by hand
    hand = np.array(
        [
            [0, 2, 0, 0],  # x x
            [0, 1, 1, 0],  # x y
            [0, 0, 2, 0],  # y y
            [0, 0, 2, 0],  # y y
            [0, 0, 0, 2],  # z z
            [1, 1, 0, 0],  # x <none>
            [0, 0, 2, 0],  # y y
        ]
    )
    assert overall.kappa == pytest.approx(agreement.fleiss_kappa(hand))
    # a later answer by the same person replaces their earlier one
    _answer(store, "bob", [(ids[1], "x")])
    assert {(p.a, p.b): p for p in agreement.pairwise_kappa(store)}["ann", "bob"].agreement == 1.0


def test_disagreements_go_to_review_and_the_decision_becomes_the_label(store: Store) -> None:
    ids = store.item_ids()
    _answer(store, "ann", [(ids[0], "x"), (ids[1], "y"), (ids[2], "z")])
    _answer(store, "bob", [(ids[0], "y"), (ids[1], "y"), (ids[2], None)])
    queue = agreement.review_queue(store)
    assert [(d.item_id, d.answers) for d in queue] == [
        (ids[0], {"ann": "x", "bob": "y"}),
        (ids[2], {"ann": "z", "bob": None}),
    ]
    before = agreement.pairwise_kappa(store)
    agreement.decide(store, ids[0], "rev", "z")  # neither annotator's answer
    agreement.decide(store, ids[2], "rev", "z")  # ann's answer: the current label is bob's, so a new row
    assert [d.item_id for d in agreement.review_queue(store)] == []
    current = {r["item_id"]: r for r in store.current_labels(include_none=True)}
    assert current[ids[0]]["class"] == "z" and current[ids[0]]["annotator"] == "rev"
    hist = [(h["annotator"], h["class"]) for h in label_history(store, ids[0])]
    assert hist == [("ann", "x"), ("bob", "y"), ("rev", "z")]  # history kept
    assert agreement.pairwise_kappa(store) == before  # a decision is not an annotator's answer
    assert agreement.agreement_with_reviews(store) == {"ann": (1, 2), "bob": (0, 2)}
    # a new answer after the decision puts the item back in the queue if it disagrees
    _answer(store, "bob", [(ids[0], "y")])
    assert [d.item_id for d in agreement.review_queue(store)] == [ids[0]]
    # deciding for bob's answer: the decision is the label now, bob's answer stays his in the history
    agreement.decide(store, ids[0], "rev", "y")
    assert [(h["annotator"], h["class"]) for h in label_history(store, ids[0])][-2:] == [("bob", "y"), ("rev", "y")]
    assert agreement.review_queue(store) == []
    assert agreement.agreement_with_reviews(store) == {"ann": (1, 2), "bob": (1, 2)}


def test_only_reviewers_decide_in_a_project_with_accounts(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users, "_hasher", users.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    users.add_user(store, "ann", "password1", "annotator")
    users.add_user(store, "rev", "password2", "reviewer")
    ids = store.item_ids()
    _answer(store, "ann", [(ids[0], "x")])
    with pytest.raises(AlwbError, match="may not review"):
        agreement.decide(store, ids[0], "ann", "y")
    with pytest.raises(AlwbError, match="may not review"):
        agreement.decide(store, ids[0], "nobody", "y")
    agreement.decide(store, ids[0], "rev", "y")
    assert label_history(store, ids[0])[-1]["class"] == "y"


def test_labels_per_hour_per_annotator(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import alwb.store as store_mod

    ids = store.item_ids()
    clock = iter([7200.0 + 10, 7200.0 + 20, 10800.0 + 5])
    monkeypatch.setattr(store_mod.time, "time", lambda: next(clock))
    _answer(store, "ann", [(ids[0], "x"), (ids[1], "y")])  # one transaction: one time
    _answer(store, "bob", [(ids[0], "y")])
    _answer(store, "ann", [(ids[2], "z")])
    monkeypatch.undo()
    agreement.decide(store, ids[0], "rev", "x")  # a decision is not an answer
    assert agreement.labels_per_hour(store) == [("ann", 7200.0, 2), ("ann", 10800.0, 1), ("bob", 7200.0, 1)]
