"""Models: the transformer sequence encoder, its layers, and the TFRS models built on it.

Importing this package imports TensorFlow; only training and evaluation tasks do so.
"""
