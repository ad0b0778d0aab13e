"""What a valid config alone cannot prove, checked before anything loads: the upload's rows
and the local folders LLM judges name.

Why here and not in :mod:`ussafety.pipeline`: ``ussafety run`` calls it before importing the
pipeline, which imports torch and transformers (~2 s); a rejected upload is reported in a
fraction of a second, with nothing loaded and nothing written.
"""

from __future__ import annotations

from pathlib import Path

from ussafety.config.files import ConfigError
from ussafety.config.schema import RunConfig
from ussafety.data.upload import read_upload


def preflight(cfg: RunConfig) -> None:
    """Check the upload's every row (formats, control tokens of the common chat templates,
    control characters) and each LLM judge's folder. Raises UploadError / ConfigError."""
    from ussafety.evaluate.judges.registry import parse_judge_spec  # evaluate sits above config

    if cfg.task.upload:
        result = read_upload(cfg.task.upload, control_tokens=cfg.task.control_tokens)
        if not result.ok:
            raise result.error()
    for spec in cfg.eval.judges:
        name, arg = parse_judge_spec(spec)
        if arg and not Path(arg).exists():
            raise ConfigError(f"eval.judges: judge {name!r} names {arg!r}, which does not exist")
