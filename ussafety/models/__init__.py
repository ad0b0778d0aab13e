"""Chat models: :mod:`.loading` (embedded GGUF, hub id, local folder, tiny random; LoRA),
:mod:`.chat` (the chat template for training and generation) and :mod:`.losses` (the
response-token outputs every loss reads). Nothing is imported here, so reading the chat
template does not load transformers' model code."""
