"""Networks MONAI lacks (fnet, ERFNet, PatchGAN; pure torch), size rules and the network factory."""
