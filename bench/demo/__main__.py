"""`python -m bench.demo SPLIT OUT_DIR`: write a demo split as an ImageNet-style image folder (see photos.py)."""

from bench.demo.photos import main

main()
