"""Runnable side: configs, data, training, CLI."""
