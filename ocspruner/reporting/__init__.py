"""Reporting helpers: figures for a finished (or running) training run directory."""
from .plots import load_run, write_all_plots

__all__ = ["write_all_plots", "load_run"]
