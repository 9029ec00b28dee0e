"""Command line and pipelines: load -> simulate or read -> solve -> metrics -> files and plots."""

__version__ = "0.1.0"
