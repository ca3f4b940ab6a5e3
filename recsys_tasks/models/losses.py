"""What the models' losses share."""

from __future__ import annotations

import tensorflow as tf

# Keras refuses its averaging reductions inside a distribution strategy; the tasks' losses come per example
# and the models take their mean.
PER_EXAMPLE = tf.keras.losses.Reduction.NONE


def replica_share(loss: tf.Tensor) -> tf.Tensor:
    """``loss``, a replica's mean over its part of the global batch, divided by the number of replicas.

    Optimizers sum the replicas' gradients, so the step is then the one a single process would take on the
    whole batch (exactly when the parts hold equally many targets). Outside a strategy it is ``loss``.
    """
    return loss / tf.distribute.get_strategy().num_replicas_in_sync
