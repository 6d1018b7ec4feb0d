"""One interpretation pass of one (prompt, target) request: settings, precision policy, probes, the pass."""
