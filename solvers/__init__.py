"""Plug-and-play solvers (PnP-PGD, PnP-ADMM) with convergence monitoring."""
