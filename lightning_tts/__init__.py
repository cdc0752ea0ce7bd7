"""lightning_tts: few-shot speaker-adaptive text-to-speech by meta-learning, on PyTorch Lightning.

Data flows one way: corpus -> features -> tasks -> learner -> callbacks/CLI. Importing the package
is cheap: heavy modules (Lightning, umap) load only when a command needs them.
"""

__version__ = "0.1.0"
