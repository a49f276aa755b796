"""Catalog-scale inference: a trained artifact over a spectrum dataset into a catalog."""
