"""An mmv_zoo framework plugin: `noisy_fcn`, supervised training on inputs with added Gaussian noise."""
