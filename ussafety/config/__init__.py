"""The config of one run: typed sections (:mod:`.schema`), params files (:mod:`.files`), the
run identity derived from them (:mod:`.identity`) and the checks of the files a config names
(:mod:`.preflight`). Nothing in this package imports torch or transformers."""

from ussafety.config.files import ConfigError, deep_merge, from_dict, load_config, parse_override, read_yaml
from ussafety.config.identity import align_key, canonical, config_hash, run_id, training_key
from ussafety.config.preflight import preflight
from ussafety.config.schema import (
    AlignConfig,
    EvalConfig,
    LoraConfig,
    MergeConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
)

__all__ = [
    "AlignConfig",
    "ConfigError",
    "EvalConfig",
    "LoraConfig",
    "MergeConfig",
    "MethodConfig",
    "ModelConfig",
    "RunConfig",
    "TaskConfig",
    "TrainConfig",
    "align_key",
    "canonical",
    "config_hash",
    "deep_merge",
    "from_dict",
    "load_config",
    "parse_override",
    "preflight",
    "read_yaml",
    "run_id",
    "training_key",
]
