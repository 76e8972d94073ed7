"""The embedded demo: a small class-conditional dataset built offline from photographs scikit-image ships
(`photos.py`), for a benchmark that runs in minutes without downloading anything. See README.md here for the
recipe and the photographs' licenses."""

from bench.demo.photos import CLASSES, FINGERPRINTS, IMAGE_SIZE, SPLITS, build_split, fingerprint, write_folder

__all__ = ["CLASSES", "FINGERPRINTS", "IMAGE_SIZE", "SPLITS", "build_split", "fingerprint", "write_folder"]
