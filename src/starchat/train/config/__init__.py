"""The training configuration: schema (dataclasses), recipe (YAML + overrides) and validation, in one import."""

from starchat.train.config.recipe import (  # noqa: F401
    MAX_RECIPE_BYTES,
    all_keys,
    dump_config,
    field_docs,
    load_config,
    parse_overrides,
)
from starchat.train.config.schema import (  # noqa: F401
    SECTIONS,
    TOP_LEVEL,
    ConfigError,
    DataConfig,
    LoraConfig,
    ModelConfig,
    TrainConfig,
    TrainingConfig,
)
from starchat.train.config.validate import validate_config  # noqa: F401
from starchat.train.methods import METHODS  # noqa: F401
from starchat.train.methods.dpo import DPO_LOSS_TYPES, DpoConfig  # noqa: F401
