"""Flower App: the Fashion-MNIST CNN trained with NNC-coded updates (nnr.flower), for `flwr run`."""
