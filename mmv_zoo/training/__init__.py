"""Training: the Lightning Trainer around a framework (train, resume), the tune verb, callbacks, plots."""
