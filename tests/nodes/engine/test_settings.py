"""Each training setting is declared once, in the engine: the nodes' params extend the engine's
settings, and the configs the engine runs carry every one of them."""

from __future__ import annotations

from nodes.engine.settings import FitConfig, LRRangeConfig, LRRangeSettings, TrainingSettings
from nodes.training import LRFinder, Trainer


def test_the_nodes_redeclare_none_of_the_engines_settings():
    assert set(Trainer.Params.__annotations__).isdisjoint(TrainingSettings.model_fields)
    assert set(LRFinder.Params.__annotations__).isdisjoint(LRRangeSettings.model_fields)
    assert set(TrainingSettings.model_fields) <= set(Trainer.Params.model_fields)
    assert set(LRFinder.Params.model_fields) == set(LRRangeSettings.model_fields)


def test_the_trainers_form_keeps_its_order():
    """The editor shows the trainer's own params where it always has, not after the engine's."""
    shown = list(Trainer.describe()["params_schema"]["properties"])
    assert shown == ["optimizer", "lr", "momentum", "weight_decay", "epochs", "batch_size", "loss", "label_smoothing",
                     "schedule", "step_size", "gamma", "head_lr_mult", "early_stopping",
                     "stop_at_accuracy", "seed", "mixed_precision",
                     "workers", "feature_cache", "augmented_copies", "devices", "strategy", "num_nodes", "node_rank",
                     "rdzv_endpoint", "compile", "grad_clip", "lr_decay", "block_lrs", "batch_augment", "mix_alpha",
                     "distill_alpha", "distill_temperature", "final_lr", "sgdr_cycle", "sgdr_mult"]


def test_the_trainers_config_carries_every_setting():
    params = Trainer.Params(optimizer="sgd", lr=0.5, epochs=3, block_lrs=[1e-4, 1e-2], workers=0, devices=2,
                            schedule="sgdr", sgdr_cycle=2, mix_alpha=0.3, compile=True)
    config = Trainer.fit_config(params, "cpu")
    assert config.device == "cpu" and config.workers == 0
    for name in TrainingSettings.model_fields:
        if name != "workers":
            assert getattr(config, name) == getattr(params, name), name
    assert FitConfig.from_record(config.record()) == config


def test_the_finders_config_carries_every_setting():
    params = LRFinder.Params(start_lr=1e-5, end_lr=1.0, steps=7, optimizer="sgd", momentum=0.5, batch_size=8, seed=3)
    config = LRRangeConfig(**params.model_dump(), device="cpu")
    assert all(getattr(config, name) == getattr(params, name) for name in LRRangeSettings.model_fields)
    assert config.fit_config().momentum == 0.5 and config.fit_config().optimizer == "sgd"
