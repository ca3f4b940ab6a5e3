"""Serving: the MLflow pyfunc that consumers load, and the champion consumer."""
