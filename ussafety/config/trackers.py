"""The experiment trackers a run may report to (``train.report_to``), kept apart from the
schema as data: a copy of transformers' list, checked against it by a test."""

TRACKERS = (
    "azure_ml",
    "clearml",
    "codecarbon",
    "comet_ml",
    "dagshub",
    "dvclive",
    "flyte",
    "kubeflow",
    "mlflow",
    "neptune",
    "swanlab",
    "tensorboard",
    "trackio",
    "wandb",
)
"""The experiment trackers ``report_to`` accepts: transformers' ``INTEGRATION_TO_CALLBACK``
keys, copied so that validating a config does not import transformers (and torch);
``tests/test_config.py`` fails when the installed transformers' list differs."""
