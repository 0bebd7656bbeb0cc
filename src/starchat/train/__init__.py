"""Fine-tuning: typed configs and recipes, training on 1 CPU to N GPUs, resume, LoRA, model cards."""

from starchat.train.config import TrainConfig, load_config  # noqa: F401


def train(cfg, callbacks=None):
    """Train as configured (see :func:`starchat.train.run.train`)."""
    from starchat.train.run import train as _train

    return _train(cfg, callbacks)
