"""Offline training and evaluation of the ranking model; the worker never imports this package."""
