"""AdaptRec: stages of the nightly transformer-recommender retraining pipeline.

TensorFlow Recommenders refuses Keras 3, so every process that imports this package
(Airflow task processes included) is switched to tf-keras before TensorFlow can load.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter buries the task logs; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
