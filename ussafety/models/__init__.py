"""Chat models: loading (embedded GGUF, hub id, local folder, tiny random), LoRA, the chat
template used for training and generation, and the response-token outputs losses read."""

from ussafety.models.loading import (
                                     LoadedModel,
                                     add_lora,
                                     load_adapter,
                                     load_model,
                                     model_dir_for,
                                     save_adapter,
                                     save_merged,
                                     tiny_random_model,
)

__all__ = ["LoadedModel", "add_lora", "load_adapter", "load_model", "model_dir_for", "save_adapter",
           "save_merged", "tiny_random_model"]
