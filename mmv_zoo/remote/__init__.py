"""What comes from outside: verified downloads, safe archive extraction, pretrained weights, MMV_Im2Im checkpoints."""
