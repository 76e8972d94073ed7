"""bench: an evaluation-first benchmark harness for class-conditional ImageNet 256x256 generators.

Metrics are computed to match the ADM evaluator of openai/guided-diffusion; see docs/metrics.md.
"""

__version__ = "0.1.0"
