"""Mixed precision and XLA: switched on by configuration, by default only where a GPU is visible.

On CPU both usually cost more than they save (float16 matmuls are emulated; XLA recompiles for
every new ragged batch shape), so the defaults leave them off there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from recsys_tasks.training.config import AcceleratorConfig

log = logging.getLogger(__name__)


def configure_accelerator(config: AcceleratorConfig) -> bool:
    """Set the global Keras precision policy; return whether to jit-compile the train step."""
    import tensorflow as tf  # here, not at import: Params (parsed by Airflow) include this config

    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed = has_gpu if config.mixed_precision is None else config.mixed_precision
    xla = has_gpu if config.xla is None else config.xla
    tf.keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    log.info("accelerator: %s, mixed precision %s, XLA %s", "GPU" if has_gpu else "CPU", mixed, xla)
    return xla


@contextmanager
def float32_policy() -> Iterator[None]:
    """Build layers in float32 inside, whatever the training policy; the policy is restored after.

    Exported models are served in float32 (CPUs have no fast float16, and TFLite's int8 conversion
    needs float ops) even when they trained in mixed precision.
    """
    import tensorflow as tf

    training_policy = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(training_policy)
