"""Data recipes: an entry's public training data downloaded and arranged into its layout (`mmv-zoo data pull`)."""
