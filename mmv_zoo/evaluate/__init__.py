"""Evaluation: a model (or predictions) scored on labelled data with the task's metrics, and its figure."""
