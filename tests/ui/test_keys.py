"""The keyboard listener's Python side: which presses are new, in which order, and what each one does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ui import keyboard as keys

CLASSES = ["circle", "square", "triangle"]
ACTIONS = st.sampled_from(["a0", "a1", "a2", "skip", "none", "left", "right"])


def test_key_map_has_one_digit_per_class_and_the_fixed_keys() -> None:
    m = keys.key_map(CLASSES)
    assert {k: v for k, v in m.items() if k.isdigit()} == {"1": "a0", "2": "a1", "3": "a2"}
    assert m["S"] == "skip" and m["N"] == "none" and m["Enter"] == "submit"
    assert m["ArrowLeft"] == "left" and m["ArrowRight"] == "right"
    many = [f"class {i}" for i in range(12)]
    assert [keys.key_map(many)[d] for d in "1234567890"] == [f"a{i}" for i in range(10)]  # ten keys at most
    assert keys.class_keys(many) == list("1234567890")


def test_digit_classes_are_answered_by_their_own_key() -> None:
    """The digits demo: key 1 answers class "1" (not the class in position 1, "0")."""
    digits = [str(d) for d in range(10)]
    assert keys.class_keys(digits) == digits
    m = keys.key_map(digits)
    for d in digits:
        assert keys.resolve(m[d], digits) == ("answer", d)
    assert keys.resolve(keys.key_map(["3", "1", "2"])["1"], ["3", "1", "2"]) == ("answer", "1")  # any order


def test_letter_classes_are_their_keys_unless_a_shortcut_or_case_clash_takes_one() -> None:
    abc = ["a", "b", "c"]
    assert keys.class_keys(abc) == abc
    m = keys.key_map(abc)  # the browser names letter keys upper-case
    assert keys.resolve(m["B"], abc) == ("answer", "b") and m["S"] == "skip"
    for names in (["a", "s"], ["n", "y"], ["a", "A"], ["1", "10"], ["cat", "dog"], ["1", "é"], ["1", "-"]):
        assert keys.class_keys(names) == keys.DIGITS[: len(names)], names  # elsewhere: 1–9, 0 in order
    assert keys.class_keys([]) == []


def test_resolve() -> None:
    assert keys.resolve("a2", CLASSES) == ("answer", "triangle")
    assert keys.resolve("a3", CLASSES) == ("ignore", None)  # a key map from before a class was removed
    assert keys.resolve("skip", CLASSES) == ("answer", "skip")
    assert keys.resolve("none", CLASSES) == ("answer", "none")
    assert keys.resolve("left", CLASSES) == ("move", "left")
    assert keys.resolve("submit", CLASSES) == ("submit", None)
    assert keys.resolve("<script>", CLASSES) == ("ignore", None)


def test_presses_of_another_batch_or_garbage_are_ignored() -> None:
    assert keys.new_presses("b1", {"batch": "b0", "events": ["a0"]}, 0) == ([], 0)
    assert keys.new_presses("b1", None, 0) == ([], 0)
    assert keys.new_presses("b1", {"batch": "b1", "events": "a0"}, 0) == ([], 0)
    assert keys.new_presses("b1", {"batch": "b1", "events": ["a0"]}, 3) == ([], 3)  # never goes back


@given(st.lists(ACTIONS, max_size=40), st.lists(st.integers(0, 40), max_size=8))
def test_every_press_is_applied_once_in_order_however_the_lists_arrive(events: list[str], cuts: list[int]) -> None:
    """The browser sends its growing list; some versions are merged away (only later ones arrive). Whatever the
    server sees, the presses it applies, concatenated, are a prefix of what was pressed, and all once the last
    list arrives."""
    arrivals = sorted({min(c, len(events)) for c in cuts}) + [len(events)]
    applied: list[str] = []
    seen = 0
    for n in arrivals:
        new, seen = keys.new_presses("b", {"batch": "b", "events": events[:n]}, seen)
        applied += new
        assert applied == events[:n]
    assert applied == events and seen == len(events)
