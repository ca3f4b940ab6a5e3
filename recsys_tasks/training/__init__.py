"""Training stages: self-supervised pre-training and TFRS fine-tuning."""
