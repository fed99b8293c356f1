"""Training data: pairs and layouts, patch datasets, the persistent cache, LightningDataModules."""
