"""Training: backward counts per node, saved activations, a training step's cost and memory (issue 15)."""
