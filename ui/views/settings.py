"""Settings: strategy, batch size, retraining, training mode and backbone, model, augmentation, imbalance,
pseudo-labels, device."""

from __future__ import annotations

from typing import Any

import streamlit as st

from alwb.config import AUGMENTATIONS, BALANCE, DEVICES, MODES
from alwb.errors import AlwbError
from alwb.learning import backbones
from alwb.learning.advice import advice_settings, set_advice_settings
from alwb.learning.models import list_models
from alwb.learning.plan import AUTO_BACKBONE, SMALL_IMAGE_PX, choose_backbone
from alwb.learning.query import list_strategies
from alwb.learning.query import strategy as get_strategy
from alwb.project import Project
from ui import state
from ui.text import md_escape
from ui.views import pretrain_panel
from ui.views.common import median_side, need_project, plan_sentence, show_flash


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        st.title("Settings")
        show_flash()
        cfg, tcfg = proj.config, proj.train_config
        sentence, todo = plan_sentence(proj)  # what trains and why, in plain words (the training plan)
        st.info(md_escape(sentence + (" " + todo if todo else "")))
        side = median_side(proj)
        # small greyscale images train from scratch unless a pretrained mode is asked for: backbones do not apply
        try:
            plan = proj.plan()[0]
            scratch = plan.mode == "scratch" and not plan.weights_missing
        except AlwbError:
            scratch = tcfg.mode in ("auto", "scratch")
        small = side is not None and side <= SMALL_IMAGE_PX and scratch
        names = [AUTO_BACKBONE, *backbones.backbone_names()]
        here = {r.name: r.kind for r in backbones.list_backbones() if r.cached}
        best = choose_backbone(AUTO_BACKBONE, lambda n: n in here)
        with st.form("settings"):
            labeling = _labeling_fields(cfg)
            training = _training_fields(tcfg, names, here, best)
            stopping = _stopping_fields(proj)
            if st.form_submit_button("Save settings", type="primary"):
                _save(proj, labeling, training, stopping)
        if small:  # folded away: rounds on images this small train from scratch
            with st.expander(f"Pretrained features (not used: these images are small, {side} px)"):
                _import_weights(proj)
                pretrain_panel.render(str(proj.root))
        else:
            _import_weights(proj)
            pretrain_panel.render(str(proj.root))


def _index(options: list[str], value: str) -> int:
    """Where ``value`` is among a selectbox's ``options`` (the first when a value set elsewhere is not one of them)."""
    return options.index(value) if value in options else 0


def _labeling_fields(cfg: Any) -> dict[str, Any]:
    """The labeling settings' widgets; their values by :meth:`Project.set_config`'s names."""
    st.subheader("Labeling")
    strategies = list_strategies()
    strategy = st.selectbox(
        "Query strategy",
        strategies,
        index=_index(strategies, cfg.strategy),
        help="\n".join(f"- **{name}**: {get_strategy(name).description}" for name in strategies),
    )
    # the ranges widen to a value set elsewhere (API, older settings) rather than failing the page
    batch = st.slider("Images per batch", min(4, cfg.batch_size), max(48, cfg.batch_size), cfg.batch_size, step=4)
    every = st.number_input(
        "Retrain automatically every N new labels (0: only on request)",
        0,
        max(10000, cfg.retrain_every),
        cfg.retrain_every,
        step=10,
    )
    ask_guesses = st.toggle(
        "Ask before saving the model's unchecked guesses",
        value=cfg.ask_before_guesses,
        help="a batch whose preselected guesses were not checked asks once before they are saved (as "
        "accepted guesses, not as your answers)",
    )
    return {
        "strategy": strategy,
        "batch_size": int(batch),
        "retrain_every": int(every),
        "ask_before_guesses": bool(ask_guesses),
    }


def _training_fields(tcfg: Any, names: list[str], here: dict[str, str], best: str | None) -> dict[str, Any]:
    """The model and training settings' widgets; their values by :meth:`Project.set_train_config`'s names."""
    st.subheader("Model and training")
    modes = list(MODES)
    mode = st.selectbox(
        "Training mode",
        modes,
        index=_index(modes, tcfg.mode),
        help="head: a classifier on the backbone's cached embeddings (seconds per round on a CPU); "
        "finetune: the whole backbone (for a GPU); scratch: a model trained on these images alone (the small "
        "CNN; ResNet-18 when chosen below starts from its verified ImageNet weights if they are here); auto: head "
        "on a CPU, finetune on a GPU, for photos larger than 64 px with the backbone's weights on this "
        "machine; head for small colour images; scratch for small greyscale images or without weights",
    )
    backbone = st.selectbox(
        "Pretrained backbone",
        names if tcfg.backbone in names else [*names, tcfg.backbone],
        index=names.index(tcfg.backbone) if tcfg.backbone in names else len(names),
        format_func=lambda n: (
            f"auto (the best here: {best or 'none'})"
            if n == AUTO_BACKBONE
            else f"{n} (weights here{f', {here[n]}' if here[n] in ('custom', 'packaged') else ''})"
            if n in here
            else f"{n} (no weights here)"
        ),
        help="for head and finetune rounds; auto: the first here of "
        + ", ".join(backbones.AUTO_ORDER)
        + ". Weights on this machine are marked; an administrator can import a weights file below",
    )
    models = ["auto", *list_models()]
    model = st.selectbox(
        "Model",
        models,
        index=_index(models, tcfg.model),
        help="the from-scratch model; auto: cnn6 (a project keeps the model it started with)",
    )
    augment = st.selectbox(
        "Augmentation",
        AUGMENTATIONS,
        index=AUGMENTATIONS.index(tcfg.augment),
        help="crop: random shifts; flip: mirror left-right (not for text or digits)",
    )
    balances = list(BALANCE)
    balance = st.selectbox(
        "Class imbalance",
        balances,
        index=_index(balances, tcfg.balance),
        help="weights: class-weighted loss; smote / adasyn: oversample the labeled embeddings "
        "(imbalanced-learn) and fit the classifier head on them",
    )
    pseudo = st.toggle(
        "Pseudo-labels: train on confident unlabeled images too",
        value=tcfg.pseudo,
        help="chosen anew each round, at most as many per class as it has labels; never exported as human labels",
    )
    threshold = st.slider("Pseudo-label confidence threshold", 0.5, 0.999, float(tcfg.pseudo_threshold), step=0.005)
    device = st.selectbox("Device", DEVICES, index=DEVICES.index(tcfg.device))
    epochs = st.number_input("Epochs per round (0: automatic)", 0, max(500, tcfg.epochs), tcfg.epochs)
    return {
        "mode": mode,
        "backbone": backbone,
        "model": model,
        "augment": augment,
        "balance": balance,
        "device": device,
        "epochs": int(epochs),
        "pseudo": bool(pseudo),
        "pseudo_threshold": float(threshold),
    }


def _stopping_fields(proj: Project) -> dict[str, float]:
    """What a label costs and a point of accuracy is worth (for the Progress page's advice)."""
    st.subheader("When to stop")
    adv = advice_settings(proj)
    label_cost = st.number_input(
        "Cost of one label (0: not given)",
        min_value=0.0,
        value=adv["label_cost"],
        step=0.05,
        help="with the value of a point of accuracy, the Progress page weighs what more labels would buy "
        "against what they cost (any one currency)",
    )
    point_value = st.number_input(
        "Value of one point of accuracy (0: not given)", min_value=0.0, value=adv["point_value"], step=10.0
    )
    return {"label_cost": float(label_cost), "point_value": float(point_value)}


def _save(proj: Project, labeling: dict[str, Any], training: dict[str, Any], stopping: dict[str, float]) -> None:
    """Save the form's values (advice, labeling, then training settings); a refused value stops there and says
    why."""
    try:
        set_advice_settings(proj, **stopping)
        proj.set_config(**labeling)
        proj.set_train_config(**training)
    except (AlwbError, ValueError) as exc:
        st.error(md_escape(f"Not saved: {exc}"))
    else:
        state.reset_batch()
        state.flash("Settings saved.")
        st.rerun()


def _may_import_weights(proj: Project) -> bool:
    """Weights files are installed for the whole machine: without accounts the person at a workbench that listens
    on this machine only, with accounts an admin."""
    if state.signin() is None:
        return state.on_loopback()
    from alwb.team import users

    try:
        return users.get_user(proj.store, state.annotator()).role == "admin"
    except AlwbError:
        return False


def _import_weights(proj: Project) -> None:
    """Import a backbone's weights file from the browser (as ``alwb weights add``: checked, hash shown)."""
    if not _may_import_weights(proj):
        return
    st.subheader("Import a weights file")
    st.caption(
        "A pretrained backbone's weights file (.pth or .safetensors) got elsewhere: it is checked against the "
        "architecture and kept on this machine for every project."
    )
    with st.form("import_weights", clear_on_submit=True):
        name = st.selectbox("Backbone", backbones.backbone_names())
        upload = st.file_uploader("Weights file", type=["pth", "pt", "safetensors"])
        if st.form_submit_button("Import weights") and upload is not None:
            import shutil
            import tempfile
            from pathlib import Path

            folder = Path(tempfile.mkdtemp(prefix="alwb-weights-"))
            try:
                suffix = ".safetensors" if upload.name.endswith(".safetensors") else ".pth"
                path = folder / f"upload{suffix}"
                path.write_bytes(upload.getvalue())
                origin = backbones.add(name, path)
            except (AlwbError, OSError) as exc:
                st.error(md_escape(f"Not imported: {_plain(exc)}"))
            else:
                kind = "the published file" if origin.kind == "published" else "a file of your own"
                state.reset_batch()
                state.flash(f"Weights for {name} imported ({kind}, SHA-256 {origin.sha256}).")
                st.rerun()
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def _plain(exc: Exception) -> str:
    """An error's first sentence without file paths (the upload's temporary name means nothing to the person)."""
    text = str(exc).split("\n", 1)[0]
    return text.split(": /", 1)[0] if ": /" in text else text
