"""Label: the next batch in the strategy's order; answer by mouse or keyboard, submit in one transaction."""

from __future__ import annotations

import time
import uuid
from typing import Any

import streamlit as st

from alwb.errors import AlwbError, EmptyPoolError, StoreUnavailable
from alwb.jobs import is_training, is_waiting, mark_active
from alwb.project import Project
from ui import keyboard, leasewatch, state
from ui.text import md_escape
from ui.views import signin, unavailable
from ui.views.common import need_project, plan_sentence, show_flash, show_training

COLUMNS = 4
#: After a finished round replaced an untouched batch, keys are ignored this long (ms): a key meant for the old
#: batch must not answer an image of the new one.
SWAP_QUIET_MS = 1200
_SWAPPED = "alwb_batch_swapped"
#: Session keys: when this page last renewed its batch's leases; whether a reviewer chose to label.
_RENEWED_AT = "alwb_leases_renewed_at"
_LABELING = "alwb_labeling"


def _fetch_batch(proj: Project) -> dict | None:
    cfg = proj.config
    try:
        if state.signin() is not None:  # a team: the batch is leased to this annotator (alwb.team.leases)
            from alwb.team.leases import team_batch

            res = team_batch(proj, state.annotator(), cfg.batch_size, strategy=cfg.strategy, exclude=state.skipped())
            st.session_state[_RENEWED_AT] = time.time()  # leased (or renewed) just now
        else:
            res = proj.query(cfg.batch_size, cfg.strategy, exclude=sorted(state.skipped()))
    except EmptyPoolError:
        return None
    return {"items": res.items, "round": res.round, "note": res.note, "strategy": res.strategy, "token": _token()}


def _wants_to_label(proj: Project) -> bool:
    """An annotator labels on this page; a reviewer or an admin (who lands here too) leases a batch only after
    saying so, once per session, so that a sign-in to review holds no items from the others."""
    if state.signin() is None or st.session_state.get(_LABELING):
        return True
    from alwb.team import users

    try:
        role = users.get_user(proj.store, state.annotator()).role
    except AlwbError:
        return False
    return role == "annotator"


def _offer_to_label() -> None:
    st.info(
        "Labeling leases a batch of items to you, which the others then do not get until you submit or skip it.",
        icon="🏷️",
    )
    st.button("Label a batch", type="primary", key="start_labeling", on_click=_start_labeling)


def _start_labeling() -> None:
    st.session_state[_LABELING] = True


def _token() -> str:
    return uuid.uuid4().hex


def _submit(root: str, item_ids: list[int], annotator: str) -> None:
    """Button callback: one transaction for the whole batch; the message appears only after the commit."""
    mark_active(root, submit=True)  # the round gives way while the next batch is drawn
    answers: list[tuple[int, str | None]] = []
    accepted = state.accepted_guesses(item_ids)  # the model's guesses submitted untouched: stored as such
    skipped = 0
    for item_id in item_ids:
        a = state.answer(item_id)
        if a is None or a == state.SKIP:
            state.skipped().add(item_id)
            skipped += 1
        elif a == state.NONE:
            answers.append((item_id, None))
        else:
            answers.append((item_id, a))
    saved = False
    refused: dict[int, str] = {}
    try:
        proj = Project.open(root)  # the store may be unreachable (StoreUnavailable): the answers stay on the page
    except AlwbError as exc:
        _not_saved(exc)
        return
    if _ask_first(proj, item_ids, answers, accepted):
        proj.close()
        return
    try:
        done = proj.submit(
            answers,
            skipped=[i for i in item_ids if i in state.skipped()],
            annotator=annotator,
            accepted=accepted,
            team=state.signin() is not None,  # a team member's answers are checked against the leases
        )
        refused = done.refused
        saved = True
        n_saved = len(answers) - len(refused)
        n_guess = len([i for i in accepted if i not in refused])
        if n_saved == 0 and skipped:
            msg = f"Skipped {skipped} image(s); no label was saved."
        else:
            msg = (
                f"Saved {n_saved} label(s) to the store"
                + (f" ({n_guess} of them the model's guesses, accepted unchecked)" if n_guess else "")
                + (f", {skipped} skipped" if skipped else "")
                + "."
            )
        if refused:
            reasons = sorted(set(refused.values()))
            msg += (
                f" {len(refused)} answer(s) were not saved, as the item is someone else's now: "
                + "; ".join(reasons)
                + ". Their answer counts; yours on the other items is saved."
            )
        if proj.retrain_if_due() in ("started", "queued"):  # every answer counts, validation ones too
            msg += " Retraining started in the background."
        state.flash(msg, "info" if refused else "success")
    except AlwbError as exc:
        if not saved:
            _not_saved(exc)
            return
        state.flash(f"Saved {len(answers)} label(s) to the store; afterwards: {exc}", "info")  # committed
    finally:
        proj.close()
    state.reset_batch()


def _ask_first(proj: Project, item_ids: list[int], answers: list[tuple[int, str | None]], accepted: list[int]) -> bool:
    """Before saving, ask once per batch when untouched guesses would be saved as accepted guesses (unless the
    project's setting turned that off), or when no card is answered at all; True: asked, nothing saved."""
    b = state.batch()
    if b is None:
        return False
    asked = b.setdefault("asked", set())
    if not answers and "empty" not in asked:
        asked.add("empty")
        state.flash(
            f"No image of this batch is answered. Submit again (Enter) to skip all {len(item_ids)}; skipped images "
            "come back in a later session.",
            "warning",
        )
    elif accepted and proj.config.ask_before_guesses and "guesses" not in asked:
        asked.add("guesses")
        state.flash(
            f"{len(accepted)} answer(s) are still the model's guesses (the dashed cards), not checked by you. Submit "
            "again (Enter) to save them marked as accepted guesses, or answer them first.",
            "warning",
        )
    else:
        return False
    for item_id in item_ids:  # the skips counted above were not taken
        if state.answer(item_id) in (None, state.SKIP):
            state.skipped().discard(item_id)
    b["token"] = _token()  # the browser closed its key list at Enter: open a new one
    return True


def _not_saved(exc: AlwbError) -> None:
    """A submit that did not commit: say so; the batch and its answers stay for the next submit."""
    state.flash(f"Nothing was saved: {exc}", "error")
    b = state.batch()
    if b is not None:
        b["token"] = _token()  # the browser's key list of this batch was closed by Enter: open a new one


def _save_drafts(root: str, item_ids: set[int]) -> None:
    """Keep answers chosen but not yet submitted in the store (one transaction), so a reload or a lost connection
    keeps them."""
    try:
        with Project.open(root) as proj:
            proj.save_drafts(state.annotator(), {i: state.answer(i) for i in item_ids})
    except AlwbError:  # the project went away: the page says so on its next run
        pass


def _answered(root: str, item_id: int, key: str) -> None:
    state.take_box_answer(item_id, key)
    _touch()
    _save_drafts(root, {item_id})


def _confirm(root: str, item_id: int) -> None:
    """The person checked the model's guess on a card and keeps it: it is their answer now."""
    state.set_answer(item_id, state.answer(item_id))
    _touch()
    _save_drafts(root, {item_id})


def _key_answer(value: str, item_ids: list[int], root: str, *, save: bool = True) -> int | None:
    """Answer the focused card with ``value`` and move the focus on; returns the item answered."""
    i = state.focus()
    if not 0 <= i < len(item_ids):
        return None
    state.set_answer(item_ids[i], value)
    state.set_focus(min(i + 1, len(item_ids) - 1))
    _touch()  # a finished round must not replace a batch answered from the keyboard either
    if save:
        _save_drafts(root, {item_ids[i]})
    return item_ids[i]


def _apply_presses(presses: list[str], classes: list[str], item_ids: list[int], root: str, annotator: str) -> None:
    """Apply key presses in the order they were made; Enter submits (and later presses wait for the next batch)."""
    answered: set[int] = set()
    try:
        for action in presses:
            kind, arg = keyboard.resolve(action, classes)
            if kind == "answer":
                value = {"skip": state.SKIP, "none": state.NONE}.get(arg or "", arg or "")
                item_id = _key_answer(value, item_ids, root, save=False)
                if item_id is not None:
                    answered.add(item_id)
            elif kind == "move":
                _move(-1 if arg == "left" else 1, len(item_ids))
            elif kind == "submit":
                _save_drafts(root, answered)  # the submit below drops them again; a failed one keeps them
                answered.clear()
                _submit(root, item_ids, annotator)
                st.rerun()
    finally:
        if answered:
            _save_drafts(root, answered)


def _move(delta: int, n: int) -> None:
    state.set_focus(max(0, min(n - 1, state.focus() + delta)))


def _undo(root: str) -> None:
    try:
        proj = Project.open(root)
    except AlwbError as exc:  # the store is unavailable: nothing was undone
        state.flash(f"Nothing was undone: {exc}", "error")
        return
    try:
        # in a team, the signed-in person's own last batch
        batch_id = proj.reads.last_batch_id(state.annotator() if state.signin() is not None else None)
        if batch_id is None:
            state.flash("There is no saved batch to undo.", "info")
            return
        n = proj.undo(batch_id)
        state.flash(f"Undid the last batch: {n} label(s) removed (earlier labels restored).", "info")
    finally:
        proj.close()
    state.reset_batch()


def _retrain(root: str, device: str) -> None:
    try:
        with Project.open(root) as proj:
            started = proj.request_training(device=device, requested_by=state.annotator())
    except AlwbError as exc:  # the store is unavailable
        state.flash(f"No round was started: {exc}", "error")
        return
    if started == "queued":
        state.flash("Round queued for the training worker; keep labeling.", "info")
    elif started == "started":
        state.flash("Training started in the background; keep labeling.", "info")
    else:
        state.flash("A training round is already running.", "info")


def _keep_leases(proj: Project, *, force: bool = False) -> None:
    """In a team, keep the leases of the batch on screen alive while the page is open: renewed every third of their
    time to live (this runs with the page's 2-second refresh, and at every full run with ``force``); an item whose
    lease lapsed meanwhile (a machine asleep) is taken back when nobody else has it."""
    b = state.batch()
    if state.signin() is None or not b or not b.get("items"):
        return
    from alwb.team import leases

    now = time.time()
    ttl = leases.lease_ttl(proj.store)
    last = float(st.session_state.get(_RENEWED_AT) or 0.0)
    if not force and now - last < ttl / 3:
        return
    ids = [it.id for it in b["items"]]
    if leases.renew(proj.store, state.annotator(), ids, ttl=ttl, now=now) < len(ids):
        leases.claim(proj.store, state.annotator(), ids, len(ids), ttl=ttl, now=now)
    st.session_state[_RENEWED_AT] = now


@st.fragment(run_every=2)
def _training_panel(root: str, batch_round: int) -> None:
    if not signin.still_allowed("label"):  # a fragment's rerun skips app.py's gate
        return
    try:
        proj = Project.open(root)
    except StoreUnavailable as exc:  # this panel tries again in 2 s; answers chosen meanwhile stay in the session
        st.warning(md_escape(unavailable.message(exc, 2)), icon="🔌")
        return
    try:
        _keep_leases(proj)
        prog = proj.training_progress()
        show_training(prog, root, proj.train_config.device)
        current = proj.reads.current_round()
    except StoreUnavailable as exc:
        st.warning(md_escape(unavailable.message(exc, 2)), icon="🔌")
        return
    finally:
        proj.close()
    if current > batch_round:
        news = round_news(root, current)
        untouched = st.session_state.get("touched") is not True
        if untouched:  # never without a word: the new batch is announced, and keys wait a moment (SWAP_QUIET_MS)
            state.reset_batch()
            state.reflash_recent()  # the message the person just saw survives the refresh
            st.session_state[_SWAPPED] = news + " This batch was replaced by one the new model chose."
            st.rerun(scope="app")
        else:
            st.info(news + " The next batch will use the new model.", icon="🆕")


def round_news(root: str, number: int) -> str:
    """One sentence on a finished round: its validation accuracy and 95% interval."""
    try:
        with Project.open(root) as proj:
            rnd = proj.reads.finished_round(number)
    except AlwbError:
        rnd = None
    val = (rnd or {}).get("metrics", {}).get("val") or {}
    if val.get("n") and val.get("accuracy") is not None:
        return (
            f"Round {number} finished: validation accuracy {val['accuracy']:.0%} (95% interval "
            f"{val['accuracy_low']:.0%}–{val['accuracy_high']:.0%}, {val['n']} validation images)."
        )
    return f"Round {number} finished (no validation answers yet, so its accuracy is not known)."


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        root = str(proj.root)
        classes = proj.classes
        st.title("Label")
        msg = show_flash()
        if msg:
            state.remember_flash(msg)
        if not classes:
            st.warning("This project has no classes yet: add them on the Start page.")
            st.stop()
        b = state.batch()
        if (b is None or not b["items"]) and not _wants_to_label(proj):
            _offer_to_label()
            return
        if b is None or not b["items"]:
            b = _new_batch(proj, classes)
            st.session_state["touched"] = False
            if b is not None and b["items"]:
                proj.prepare_first_round()  # no model yet: the first round's imports happen while this is answered
        else:  # every run of the open page keeps the batch's leases alive
            _keep_leases(proj, force=True)
        if state.signin() is not None:  # a closed tab gives its items back (ui.leasewatch)
            token = state.signin()[0]  # type: ignore[index]
            leasewatch.remember(root, state.annotator(), [it.id for it in b["items"]] if b else [], token)
        tally = proj.reads.counts()
        n_labeled, total, n_left = tally.answered, tally.items, tally.unanswered
        cfg = proj.config
        strategy_text = cfg.strategy
        if cfg.strategy == "auto":  # what auto uses now, as `alwb status` says it
            strategy_text = f"auto, now {proj.auto_strategy()}"
        device = proj.train_config.device
        images = proj.reads.image_root()
        digests = proj.reads.digests([it.path for it in b["items"]] if b else [])
        plan_text, plan_todo = plan_sentence(proj)
        running = is_training(root) and not is_waiting(root, proj.store)
    top = st.columns([3, 1, 1])
    every = (
        f"a new model every {cfg.retrain_every} answers (the first after the first batch)"
        if cfg.retrain_every
        else "a new model when you press Retrain now"
    )
    top[0].caption(f"{n_labeled} of {total} items answered · strategy {strategy_text} · {every}")
    top[0].caption(
        md_escape(plan_text + (" " + plan_todo if plan_todo else ""))
        + (" While a round trains, it gives way to your keys; a pause lets it finish sooner." if running else "")
    )
    top[1].button("Retrain now", on_click=_retrain, args=(root, device), key="retrain")
    top[2].button("Undo last batch", on_click=_undo, args=(root,), key="undo")
    _training_panel(root, b["round"] if b else 0)
    if b is None:
        _nothing_to_label(total, n_left)
        return
    swapped = st.session_state.pop(_SWAPPED, None)
    if swapped:
        st.info(swapped, icon="🆕")
    if b["note"]:
        st.info(b["note"])
    items = b["items"]
    ids = [it.id for it in items]
    options = [*classes, state.SKIP, state.NONE]
    if "token" not in b:
        b["token"] = _token()
    presses = keyboard.presses(b["token"], classes, quiet_ms=SWAP_QUIET_MS if swapped else 0)
    _apply_presses(presses, classes, ids, root, state.annotator())
    focus = min(state.focus(), len(items) - 1)
    keyboard.show_card(b["token"], focus)
    n_guess = len(state.accepted_guesses(ids))
    st.html(_card_styles(focus, [j for j, it in enumerate(items) if state.is_guess(it.id)]))

    for row_start in range(0, len(items), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, j in zip(cols, range(row_start, min(row_start + COLUMNS, len(items))), strict=False):
            it = items[j]
            with col.container(border=True, key=f"cell_{j}"):
                _card(j, it, focus, options, images, digests.get(it.path), root)

    _key_bar(classes, items, focus, n_guess, root)
    if st.toggle("Similar images", key="lbl_similar", help="the images nearest to the framed card (embeddings)"):
        from ui.views import insight as insight_views

        with Project.open(root) as p:
            insight_views.similar_strip(p, items[focus].id)


def _new_batch(proj: Project, classes: list[str]) -> dict | None:
    """A fresh batch, kept in the session, with the model's guesses preselected, the person's unsubmitted answers
    back from the store, and the focus on the first card not answered."""
    b = _fetch_batch(proj)
    state.set_batch(b)
    if b is not None:
        for it in b["items"]:  # validation answers are never pre-filled: the model must not anchor them
            if it.predicted in classes and it.reason != "validation":
                state.set_guess(it.id, it.predicted)  # a guess until the person answers the card
        # answers chosen before a reload or a lost connection come back from the store
        options = {*classes, state.SKIP, state.NONE}
        for item_id, ans in proj.reads.drafts(state.annotator(), [it.id for it in b["items"]]).items():
            if ans in options:
                state.set_answer(item_id, ans)
        # a reload resumes at the first card the person has not answered
        state.set_focus(state.first_unanswered([it.id for it in b["items"]]))
    return b


def _card(j: int, it: Any, focus: int, options: list[str], images: Any, digest: str | None, root: str) -> None:
    """Card ``j`` of the batch: the image (only while its file holds the content imported), what the model says,
    the answer box, and "✓ keep it" while the answer is the model's unchecked guess."""
    shown = state.image_bytes(images, it.path, 192, digest)
    if shown is None:
        st.warning(md_escape(state.image_problem(images, it.path, digest)))
    else:
        st.image(shown[0], width="stretch", output_format=shown[1])
    head = f"{'▶ ' if j == focus else ''}#{j + 1}"
    guess = state.is_guess(it.id)
    if it.reason == "validation":
        head += " · validation sample"
    elif it.predicted is not None:
        head += f" · model: {it.predicted} ({it.probability:.0%})"
    st.text(head)
    key = state.answer_key(it.id)  # a new key whenever the answer was set from outside the box
    current = state.answer(it.id)
    st.selectbox(
        f"answer {j + 1}",
        options,
        index=options.index(current) if current in options else None,
        key=key,
        placeholder="choose…",
        label_visibility="collapsed",
        on_change=_answered,
        args=(root, it.id, key),
    )
    if guess:  # the model's guess is not the person's answer until they confirm or change it
        st.button(
            "guess, not checked: ✓ keep it",
            key=f"ok_{j}_{it.id}",
            on_click=_confirm,
            args=(root, it.id),
            width="stretch",
        )


def _key_bar(classes: list[str], items: list, focus: int, n_guess: int, root: str) -> None:
    """The keys' legend and Submit, sticky at the bottom; the buttons also answer with the mouse."""
    ids = [it.id for it in items]
    with st.container(key="alwb_keybar"):
        keys = st.container(horizontal=True)
        for k, cls in zip(keyboard.class_keys(classes), classes, strict=False):
            shown = _short(cls) if k == cls else f"{k} · {_short(cls)}"  # a key that is the class name shows once
            keys.button(shown, key=f"key_{k}", on_click=_key_answer, args=(cls, ids, root))
        keys.button("S · skip", key="key_skip", on_click=_key_answer, args=(state.SKIP, ids, root))
        keys.button("N · none", key="key_none", on_click=_key_answer, args=(state.NONE, ids, root))
        keys.button("◀", key="key_left", on_click=_move, args=(-1, len(ids)))
        keys.button("▶", key="key_right", on_click=_move, args=(1, len(ids)))
        keys.button(
            f"Submit batch of {len(items)} (Enter)",
            type="primary",
            key="submit",
            on_click=_submit,
            args=(root, ids, state.annotator()),
        )
        st.caption(
            f"Keys answer card #{focus + 1} (blue frame) and move on."
            + (
                f" {n_guess} dashed card(s) show the model's guess, not yet checked: a key or ✓ makes it your "
                "answer; submitted untouched it is saved as an accepted guess."
                if n_guess
                else ""
            )
        )


def _card_styles(focus: int, guesses: list[int]) -> str:
    """CSS of the grid: the focused card framed, guesses dashed, images of one height, the key bar sticky."""
    rules = [
        # one image height, so the answer boxes line up whatever the photos' shapes
        '[class*="st-key-cell_"] img {height: 180px; object-fit: contain;}',
        # room for the header above and the sticky key bar below when a card is scrolled into view
        '[class*="st-key-cell_"] {scroll-margin-top: 80px; scroll-margin-bottom: 150px;}',
        f".st-key-cell_{focus} {{outline: 4px solid #1c83e1; outline-offset: 1px;}}",
        # sticky on the bar's layout wrapper, which is as tall as the bar; its parent spans the page
        '[data-testid="stLayoutWrapper"]:has(> .st-key-alwb_keybar), .st-key-alwb_keybar {position: sticky;'
        " bottom: 0; z-index: 990;}",
        ".st-key-alwb_keybar {padding: 0.4rem 0 0.2rem 0; background: var(--st-background-color, #ffffff);"
        " border-top: 1px solid rgba(128, 128, 128, 0.4);}",
    ]
    rules += [f".st-key-cell_{j} {{border: 2px dashed #e8a200 !important;}}" for j in guesses]
    return "<style>" + "\n".join(rules) + "</style>"


def _nothing_to_label(total: int, n_left: int) -> None:
    """Why there is no batch: no images yet, every image answered, or the rest skipped in this session."""
    if total == 0:
        st.info("This project has no images yet: add a folder or a zip of images on the Start page.")
    elif n_left and state.skipped():
        st.info(
            f"The {n_left} image(s) not yet answered were all skipped in this session. They come back after a "
            "reload, or now:"
        )
        st.button("Show the skipped images again", key="unskip", on_click=state.skipped().clear)
    elif n_left:
        st.info(f"The {n_left} image(s) not yet answered are in other people's batches just now: try again soon.")
    else:
        st.success(f"All {total} images are answered. Nothing left to label.")


def _touch() -> None:
    st.session_state["touched"] = True


def _short(name: str, n: int = 14) -> str:
    return md_escape(name if len(name) <= n else name[: n - 1] + "…")
