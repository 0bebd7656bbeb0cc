"""`starchat export`: a trained model for use elsewhere: LoRA adapters merged into their base
(`starchat.export.merge`), or a GGUF file for llama.cpp / ollama (`starchat.export.gguf`).

The submodules are not imported here: converting to GGUF needs neither torch's training stack nor peft.
"""
