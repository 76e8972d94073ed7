"""`bench run`: sample a generator (or reconstruct images with a tokenizer) and score it, streaming, resumable and
sharded across processes.

    executor.py     the one skeleton: generator, reference, feature networks, run folder, shards, gather, result
    task.py         what a task supplies to it: configuration, shards, one batch's arrays, scoring
    sample.py       the default task: sample -> resize -> features; ADM's metrics; samples.npz and grid.png
    reconstruct.py  `--task reconstruct`: a tokenizer's rFID (vs the reference and vs the originals), PSNR, SSIM
    plan.py         which label and seed each sample index gets (pure functions of the run seed)
    shards.py       the run folder: finished shards' arrays on disk, config fingerprints, resume, the lock
    references.py   known reference batches (`--ref imagenet256`) and the resolution check
    score.py        the selected metrics of a run's features against the reference
    cli.py          the `bench run` and `bench generators` commands
"""
