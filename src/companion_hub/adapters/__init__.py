"""Adapters: in-process owners of a namespace that mirror an upstream system."""
