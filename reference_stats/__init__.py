"""The registry of known reference batches, `registry.json`: shipped as package data so that `--ref imagenet256`
resolves from a wheel install as well as from a checkout (see README.md here)."""
