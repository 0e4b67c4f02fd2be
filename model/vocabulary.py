"""The names a model's parts answer to: modes, architectures, spectral indices, losses, schedules, label
sources.

The modules that implement them (architecture, losses, dataset) need TensorFlow; these names do not, so
the training configuration (model/config.py), `--help` and the Flex Template metadata can list them
without loading it.
"""

from __future__ import annotations

# What a model predicts: a class per pixel, or one per patch.
SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"
MODES = (SEGMENTATION, CLASSIFICATION)

# The model factories of model/architecture.py, by name.
UNET = "unet"
MINIMAL = "minimal"
CLASSIFIER = "classifier"
ARCHITECTURE_NAMES = (UNET, MINIMAL, CLASSIFIER)
DEFAULT_ARCHITECTURE = {SEGMENTATION: UNET, CLASSIFICATION: CLASSIFIER}

# Normalized-difference indices (a - b) / (a + b), by the spectral role of a and b.
SPECTRAL_INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),  # vegetation (Rouse et al. 1974)
    "ndwi": ("green", "nir"),  # open water (McFeeters 1996)
    "mndwi": ("green", "swir1"),  # water, built-up suppressed (Xu 2006)
    "ndbi": ("swir1", "nir"),  # built-up (Zha et al. 2003)
}
# The spectral roles those indices use, which band roles (`nir=SR_B5`) may name.
SPECTRAL_ROLES = ("green", "red", "nir", "swir1")
ALL_INDICES = "auto"
NO_INDICES = "none"

# The per-pixel loss, and the loss over each batch that may be added to it.
LOSSES = ("crossentropy", "focal")
REGION_TERMS = ("none", "dice", "lovasz")

# The learning-rate schedules of a training run.
SCHEDULES = ("plateau", "cosine")
XLA_SETTINGS = ("auto", "on", "off")
# The precision a training run computes in: float32, or Keras' mixed_bfloat16 (bfloat16 arithmetic,
# float32 weights), which only CPUs with native bfloat16 (Intel AMX, AVX-512 BF16) run faster; auto
# picks by the CPU.
AUTO_PRECISION = "auto"
FLOAT32 = "float32"
MIXED_BFLOAT16 = "mixed_bfloat16"
PRECISIONS = (AUTO_PRECISION, FLOAT32, MIXED_BFLOAT16)
# The run length from which --xla auto compiles: XLA's compilation costs ~14 CPU-s more than tracing the
# default U-Net and its steps save ~12 ms each on 16×16 patches (paid back after ~1,200 steps, measured
# over 1 and 8 epochs in one run; less is saved on larger patches): docs/performance.md, "Training".
XLA_AUTO_STEPS = 2000

# Where a classification model's label comes from: the label patch's majority class, or a per-patch
# label feature.
LABEL_MAJORITY = "majority"
LABEL_FEATURE = "feature"
LABEL_SOURCES = (LABEL_MAJORITY, LABEL_FEATURE)
