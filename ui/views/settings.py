"""Settings: strategy, batch size, retraining, model, augmentation, imbalance, pseudo-labels, device."""

from __future__ import annotations

import streamlit as st

from alwb.config import AUGMENTATIONS, BALANCE, DEVICES
from alwb.errors import AlwbError
from alwb.models import list_models
from alwb.query import list_strategies
from ui import state
from ui.text import md_escape
from ui.views.common import need_project, show_flash


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        st.title("Settings")
        show_flash()
        cfg, tcfg = proj.config, proj.train_config
        with st.form("settings"):
            st.subheader("Labeling")
            strategies = list_strategies()
            strategy = st.selectbox(
                "Query strategy",
                strategies,
                index=strategies.index(cfg.strategy) if cfg.strategy in strategies else 0,
            )
            # the ranges widen to a value set elsewhere (API, older settings) rather than failing the page
            batch = st.slider(
                "Images per batch", min(4, cfg.batch_size), max(48, cfg.batch_size), cfg.batch_size, step=4
            )
            every = st.number_input(
                "Retrain automatically every N new labels (0: only on request)",
                0,
                max(10000, cfg.retrain_every),
                cfg.retrain_every,
                step=10,
            )
            st.subheader("Model and training")
            models = ["auto", *list_models()]
            model = st.selectbox(
                "Model",
                models,
                index=models.index(tcfg.model) if tcfg.model in models else 0,
                help="auto: cnn6 up to 64 px, ResNet-18 above (a project keeps the model it started with)",
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
                index=balances.index(tcfg.balance) if tcfg.balance in balances else 0,
                help="weights: class-weighted loss; smote / adasyn: oversample the labeled embeddings "
                "(imbalanced-learn) and fit the classifier head on them",
            )
            pseudo = st.toggle(
                "Pseudo-labels: train on confident unlabeled images too",
                value=tcfg.pseudo,
                help="chosen anew each round, at most as many per class as it has labels; never exported as "
                "human labels",
            )
            threshold = st.slider(
                "Pseudo-label confidence threshold", 0.5, 0.999, float(tcfg.pseudo_threshold), step=0.005
            )
            device = st.selectbox("Device", DEVICES, index=DEVICES.index(tcfg.device))
            epochs = st.number_input("Epochs per round (0: automatic)", 0, max(500, tcfg.epochs), tcfg.epochs)
            if st.form_submit_button("Save settings", type="primary"):
                try:
                    proj.set_config(strategy=strategy, batch_size=int(batch), retrain_every=int(every))
                    proj.set_train_config(
                        model=model,
                        augment=augment,
                        balance=balance,
                        device=device,
                        epochs=int(epochs),
                        pseudo=bool(pseudo),
                        pseudo_threshold=float(threshold),
                    )
                except (AlwbError, ValueError) as exc:
                    st.error(md_escape(f"Not saved: {exc}"))
                else:
                    state.reset_batch()
                    state.flash("Settings saved.")
                    st.rerun()
