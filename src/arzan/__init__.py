"""arzan: cheap, honest LoRA fine-tunes on one GPU, with the bill next to the model."""

__version__ = "0.1.0"
