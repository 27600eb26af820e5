"""Loaders, splits, preprocessing, synthetic generators and LightningDataModules."""
