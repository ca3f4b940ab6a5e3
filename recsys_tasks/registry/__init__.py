"""MLflow tracking, model registration and the promotion gate."""
